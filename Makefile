# The README's two commands: `make demo` and `make test`. Both create .venv and install on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cksum requirements.txt | cut -d' ' -f1)
export HF_HUB_OFFLINE := 1

.PHONY: install demo runs test teacher clean-runs

$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --no-cache-dir -r requirements.txt
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

## make demo: produce the embedded-default runs (skipping finished ones), then open the dashboard
demo: runs
	$(PY) -m streamlit run app.py --server.address localhost --server.headless true --browser.gatherUsageStats false

runs: $(STAMP)
	$(PY) -m lab demo

## make test: the whole test suite
test: $(STAMP)
	$(PY) -m pytest -q

## make teacher: rebuild the shipped ShapesWorld teacher from scratch (about 40 min on 2 CPU cores)
teacher: $(STAMP)
	$(PY) -m lab pretrain --preset teacher --name teacher-recipe --overwrite --export data/teacher/shapes-teacher.safetensors

clean-runs:
	rm -rf runs
