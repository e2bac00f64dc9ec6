# Everything runs from the virtual environment .venv, created on first use.
VENV := .venv
BIN := $(abspath $(VENV))/bin
PY := $(BIN)/python
# nbgrader calls alembic by name
export PATH := $(BIN):$(PATH)
ASSIGNMENT_NAMES := $(notdir $(wildcard solutions/*))

.PHONY: all venv sandbox chromium book browser-test nbval assignments grade-demo grade test test-scale bench gpu-check lint clean

## all: set up, build the book and grade the demo class (the main job)
all: book grade-demo

$(VENV)/installed.txt: requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip freeze > $@

venv: $(VENV)/installed.txt

## sandbox: install bubblewrap, the sandbox student code runs in (Debian's package; needs root)
sandbox:
	@command -v bwrap >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq bubblewrap; } \
		|| echo "bubblewrap is not installed: grading falls back to rlimits (see README)"

## chromium: install Chromium, the browser that browser-test drives (Debian's package; needs root)
chromium:
	@{ [ -n "$$CHROMIUM" ] && [ -x "$$CHROMIUM" ]; } || command -v chromium >/dev/null \
		|| { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq chromium; } \
		|| { echo "chromium is missing: install Debian's package as root (apt-get install chromium), or set CHROMIUM=/path/to/chromium"; exit 1; }

## book: build the book into _build/html (warnings are errors)
book: venv
	$(BIN)/jupyter-book build . -W -n --keep-going

## browser-test: open every page of the built book in headless Chromium (after `make book`); screenshots in _build/screenshots
browser-test: venv chromium
	$(BIN)/pytest tests/browser -p no:cacheprovider

## assignments: regenerate assignments/ (nbgrader's release) from solutions/ (its source)
assignments: venv
	for name in $(ASSIGNMENT_NAMES); do $(BIN)/nbgrader generate_assignment $$name --force || exit 1; done

## grade-demo: grade the demo submissions in tests/demo into _build/grades
grade-demo: venv sandbox
	$(PY) -m autograder grade tests/demo/submitted --out _build/grades --jobs 2

## grade: grade a collected class, e.g. make grade SUBMITTED=submitted OUT=grades
grade: venv sandbox
	$(PY) -m autograder grade $(or $(SUBMITTED),submitted) --out $(or $(OUT),grades) --jobs $(or $(JOBS),2)

lint: venv
	$(BIN)/ruff check --line-length 120 --select E,F,W,B,I,UP --extend-exclude tests/demo autograder benchmarks tests _ext nbgrader_config.py
	$(BIN)/ruff format --line-length 120 --extend-exclude tests/demo --check autograder benchmarks tests _ext nbgrader_config.py

## test: every test: lint, grader and catalogue, fresh assignments, the solutions run as in Colab; then
## the strict book build (which executes every chapter) beside nbval of every chapter and solution;
## then the built book in a browser
test: lint sandbox
	$(BIN)/pytest tests -p no:cacheprovider --ignore=tests/scale --ignore=tests/browser
	$(MAKE) -j2 --output-sync=target book nbval
	$(MAKE) browser-test

## nbval: re-execute every chapter and solution notebook (one thread each, so it can run beside the book build)
nbval: venv
	OMP_NUM_THREADS=1 $(BIN)/pytest --nbval-lax book solutions -p no:cacheprovider

## test-scale: grade a class of 200 (correct, buggy and broken) with --jobs 2, and report time and memory
test-scale: venv sandbox
	$(BIN)/pytest tests/scale -p no:cacheprovider -s

## bench: the solutions against PyTorch's own modules, and the grader's speed (_build/bench); not a test
bench: venv
	$(PY) -m benchmarks.bench --out _build/bench

## gpu-check: hidden tests, mutant catalogue, allocation tracker and benchmarks on CUDA (skipped without a GPU)
gpu-check: venv sandbox
	$(PY) -m benchmarks.gpu_check --out _build/gpu-check

clean:
	rm -rf _build
