# Everything runs from the virtual environment .venv, created on first use.
VENV := .venv
BIN := $(abspath $(VENV))/bin
PY := $(BIN)/python
# nbgrader calls alembic by name
export PATH := $(BIN):$(PATH)
ASSIGNMENT_NAMES := $(notdir $(wildcard solutions/*))

.PHONY: all venv sandbox book assignments grade-demo grade test test-scale bench gpu-check lint clean

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

## book: build the book into _build/html (warnings are errors)
book: venv
	$(BIN)/jupyter-book build . -W -n --keep-going

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
	$(BIN)/ruff check --line-length 120 --select E,F,W,B,I,UP --extend-exclude tests/demo autograder benchmarks tests nbgrader_config.py
	$(BIN)/ruff format --line-length 120 --extend-exclude tests/demo --check autograder benchmarks tests nbgrader_config.py

## test: every test: lint, grader and catalogue, fresh assignments, solutions under nbval, and the
## strict book build, which executes every chapter (a cell that raises fails it)
test: lint sandbox
	$(BIN)/pytest tests -p no:cacheprovider --ignore=tests/scale
	$(BIN)/pytest --nbval-lax solutions -p no:cacheprovider
	$(MAKE) book

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
