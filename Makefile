# The README's two commands: `make demo` and `make test`. Both create .venv and install on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cksum requirements.txt | cut -d' ' -f1)
export HF_HUB_OFFLINE := 1

.PHONY: install demo runs test teacher clean-runs lab notebooks student instructor lessons-html lessons-pack student-pack site

$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --no-cache-dir -r requirements.txt
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

## make demo: open the dashboard at once (http://localhost:8501) and train the demo runs behind it;
## runs appear as they finish, the Overview shows the progress (finished runs are skipped)
demo: $(STAMP)
	$(PY) -m lab demo --serve

runs: $(STAMP)
	$(PY) -m lab demo

## make test: the whole test suite
test: $(STAMP)
	$(PY) -m pytest -q

## make teacher: rebuild the shipped ShapesWorld teacher from scratch (about 40 min on 2 CPU cores)
teacher: $(STAMP)
	$(PY) -m lab pretrain --preset teacher --name teacher-recipe --overwrite --export data/teacher/shapes-teacher.safetensors

## make lab: JupyterLab on notebooks/, on localhost, with this repository's .venv as the kernel
## (LAB_ARGS="--no-browser --port=8899" passes options; LAB_PRESET=fast|cpu|gpu picks the lessons' budget)
lab: $(STAMP)
	$(PY) -m jupyterlab --ServerApp.ip=localhost --ServerApp.root_dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

## make notebooks: rewrite notebooks/NN_*.ipynb from their jupytext sources notebooks/NN_*.py (outputs stripped)
notebooks: $(STAMP)
	$(PY) -m lab lessons sync

## make student / make instructor: that edition of every lesson, in notebooks/editions/<edition>/
student instructor: $(STAMP)
	$(PY) -m lab lessons edition $@ notebooks/editions/$@

## make lessons-html: the executed cpu-preset lessons as offline HTML pages in runs/lessons/html-cpu/
lessons-html: $(STAMP)
	test -d runs/lessons/executed-cpu || $(PY) notebooks/run_presets.py --preset cpu
	$(PY) -m lab lessons html --preset cpu

## make lessons-pack: the lessons' finished cpu-preset runs as one archive for a classroom (see notebooks/INSTRUCTORS.md)
lessons-pack: $(STAMP)
	$(PY) -m lab lessons pack --preset cpu runs/lessons-cpu.tar.gz

## make student-pack: what a student receives (no solutions), in runs/student-pack/ (see notebooks/INSTRUCTORS.md);
## it needs the runs pack of make lessons-pack and executes the student edition's HTML pages in the cpu preset
student-pack: $(STAMP)
	test -f runs/lessons-cpu.tar.gz || $(MAKE) lessons-pack
	rm -rf runs/student-pack
	$(PY) -m lab lessons student-pack runs/student-pack --preset cpu --runs-pack runs/lessons-cpu.tar.gz

## make site: the docs and the lessons as one offline static site in runs/site/ (strict build; the student edition,
## with the executed cpu-preset outputs when runs/lessons/executed-cpu exists). View: python -m http.server -d runs/site
site: $(STAMP)
	$(PY) -m lab lessons site runs/site $(if $(wildcard runs/lessons/executed-cpu/00_*.ipynb),--executed runs/lessons/executed-cpu)

clean-runs:
	rm -rf runs
