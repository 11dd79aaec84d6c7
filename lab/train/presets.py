"""The pretraining presets (``python -m lab pretrain --preset NAME``), as config overrides.

A module of plain data, so the command line can list them without importing torch.
"""

PRESETS: dict[str, dict] = {
    # The shipped ShapesWorld teacher: an endless stream of every class and style.
    "teacher": {"model": "shapes-teacher", "data.size": 0, "data.style_weights": "0.4,0.2,0.2,0.2",
                "train.steps": 3600, "train.batch_size": 128, "train.lr": 1e-3, "train.warmup": 200,
                "train.eval_every": 250, "reference_teacher": ""},
    # The lab's default student budget: a fixed set of 8,192 pairs (the teacher saw 460,800
    # stream items) and 800 steps (the teacher took 3,600); distillation runs use the same.
    "student": {"model": "shapes-student", "data.size": 8192, "train.steps": 800, "train.batch_size": 128,
                "train.lr": 2e-3, "train.warmup": 80, "train.eval_every": 200},
    # A seconds-long run for tests and smoke checks.
    "smoke": {"model": "shapes-student", "data.size": 256, "train.steps": 6, "train.batch_size": 32,
              "train.warmup": 2, "train.log_every": 2, "eval.per_style": 64, "reference_teacher": ""},
}
