import numpy as np
import pytest

from lab.data.shapes import (
    COLOUR_NAMES, COLOUR_SHAPE_PAIRS, HOLDOUT_CLASS_IDS, HOLDOUT_PAIRS, LABEL_SPACES, SHAPES, SIZES, STYLES,
    ShapesWorld, StreamSpec, describe, label_space,
)


@pytest.fixture(scope="module")
def world():
    return ShapesWorld(32)


def test_same_seed_same_items(world):
    a = world.sample(StreamSpec(seed=3), 0, 300)
    b = ShapesWorld(32).sample(StreamSpec(seed=3), 0, 300)
    assert np.array_equal(a.images, b.images)
    assert a.captions == b.captions
    for k in a.factors:
        assert np.array_equal(a.factors[k], b.factors[k])


def test_items_do_not_depend_on_batching(world):
    whole = world.sample(StreamSpec(seed=1), 0, 600)
    part = world.sample(StreamSpec(seed=1), 250, 300)  # crosses chunk boundaries
    assert np.array_equal(part.images, whole.images[250:550])
    assert part.captions == whole.captions[250:550]


def test_other_seed_and_split_differ(world):
    a = world.sample(StreamSpec(seed=0), 0, 64)
    assert not np.array_equal(a.images, world.sample(StreamSpec(seed=1), 0, 64).images)
    assert not np.array_equal(a.images, world.sample(StreamSpec(seed=0, split="test"), 0, 64).images)


def test_render_is_a_function_of_the_factors(world):
    batch = world.sample(StreamSpec(seed=5), 0, 100)
    assert np.array_equal(world.render(batch.factors), batch.images)
    assert batch.images.shape == (100, 32, 32, 3) and batch.images.dtype == np.uint8


def test_label_spaces_and_base_novel_split():
    space = LABEL_SPACES["colour_shape"]
    assert space.num_classes == len(COLOUR_NAMES) * len(SHAPES) == 64
    assert len(space.base_ids) == 32 and len(space.novel_ids) == 32
    assert set(space.base_ids).isdisjoint(space.novel_ids)
    # Every colour and every shape appears among both base and novel classes.
    for ids in (space.base_ids, space.novel_ids):
        pairs = [COLOUR_SHAPE_PAIRS[i] for i in ids]
        assert {c for c, _ in pairs} == set(range(len(COLOUR_NAMES)))
        assert {s for _, s in pairs} == set(range(len(SHAPES)))
    assert label_space("size").classnames == tuple(f"{s} shape" for s in SIZES)
    assert len(label_space("shape").base_ids) == 4  # ceil(8 / 2)
    with pytest.raises(ValueError, match="choose one of"):
        label_space("texture")


def test_labels_match_factors(world):
    batch = world.sample(StreamSpec(seed=2), 0, 200)
    names = LABEL_SPACES["colour_shape"].classnames
    for i, label in enumerate(batch.labels("colour_shape")):
        assert names[label] == f"{COLOUR_NAMES[batch.factors['colour'][i]]} {SHAPES[batch.factors['shape'][i]]}"


def test_base_only_stream_has_no_novel_class(world):
    space = LABEL_SPACES["colour_shape"]
    batch = world.sample(StreamSpec(seed=0, classes=space.base_ids), 0, 2000)
    assert set(batch.labels(space)) <= set(space.base_ids)
    assert len(set(batch.labels(space))) == len(space.base_ids)


def test_holdout_stream_never_shows_held_out_pairs(world):
    assert len(HOLDOUT_PAIRS) == len(COLOUR_NAMES)
    assert len({s for _, s in HOLDOUT_PAIRS}) == len(SHAPES)  # one per shape too
    batch = world.sample(StreamSpec(seed=0, holdout=True), 0, 3000)
    labels = set(batch.labels("colour_shape"))
    assert labels.isdisjoint(HOLDOUT_CLASS_IDS)
    assert len(labels) == 64 - len(HOLDOUT_CLASS_IDS)
    full = set(world.sample(StreamSpec(seed=0), 0, 3000).labels("colour_shape"))
    assert set(HOLDOUT_CLASS_IDS) <= full


def test_style_restriction_and_weights(world):
    batch = world.sample(StreamSpec(seed=0, styles=("sketch", "noisy"), style_weights=(3, 1)), 0, 2000)
    styles = batch.factors["style"]
    assert set(styles) == {STYLES.index("sketch"), STYLES.index("noisy")}
    assert 0.7 < np.mean(styles == STYLES.index("sketch")) < 0.8


def test_captions_name_the_factors(world):
    batch = world.sample(StreamSpec(seed=4), 0, 500)
    for i, caption in enumerate(batch.captions):
        shape, colour = SHAPES[batch.factors["shape"][i]], COLOUR_NAMES[batch.factors["colour"][i]]
        size = SIZES[batch.factors["size"][i]]
        assert shape in caption or colour in caption or size in caption
        for other in (set(SHAPES) - {shape}) | (set(COLOUR_NAMES) - {colour}):
            assert f" {other} " not in caption and f" {other}." not in caption
        assert " a orange" not in caption and " a image" not in caption and caption.endswith(".")
    assert len(set(batch.captions)) > 100  # several templates
    text = describe(batch.factors, 0)
    assert SIZES[batch.factors["size"][0]] in text and SHAPES[batch.factors["shape"][0]] in text


def test_bad_stream_specs_are_explained():
    with pytest.raises(ValueError, match="Unknown style"):
        StreamSpec(styles=("watercolour",))
    with pytest.raises(ValueError, match="Unknown split"):
        StreamSpec(split="dev")
    with pytest.raises(ValueError, match="allows no colour-shape class"):
        StreamSpec(classes=HOLDOUT_CLASS_IDS[:2], holdout=True).allowed_classes
