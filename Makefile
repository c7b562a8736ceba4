# The two commands of the README: `make book` and `make test`.
# Both create (or reuse) .venv and install emlib with its extras into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Notebooks and tests share one synthetic data folder (written on first use).
export EMLIB_DATA := $(CURDIR)/data/synthetic
# One CPU thread: notebook outputs (checked by nbval) are then the same on any machine,
# and shared or busy CPUs do not slow torch down by oversubscription.
export OMP_NUM_THREADS := 1
# Kernels started by jupyter-book, nbval and jupytext must find the venv's python.
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: book test venv clean pairing notebooks

# papermill records the -p values in a cell of its own; the committed notebook keeps only the .py's cells.
export DROP_INJECTED := import nbformat, sys; nb = nbformat.read(sys.argv[1], 4); \
  nb.cells = [c for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]; nbformat.write(nb, sys.argv[1])

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

book: venv
	rm -rf _build/.jupyter_cache
	$(BIN)/jupyter-book build . -W -n --keep-going

pairing: venv
	$(BIN)/python tests/check_pairing.py

# One worker per core (at most 4), each on one thread; conftest.py's scheduler keeps a test file, or a notebook,
# on one worker (and chapters 04-06 together, since 06 reads the toy runs that 04 and 05 write).
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); [ $$n -gt 4 ] && n=4; echo $$n)

test: venv pairing
	$(BIN)/python -m pytest tests -q -n $(TEST_WORKERS)
	$(BIN)/python -m pytest --nbval notebooks --nbval-sanitize-with tests/nbval_sanitize.cfg -q -p no:cacheprovider \
	  -n $(TEST_WORKERS)

clean:
	rm -rf _build .jupyter_cache

# Re-execute every notebook from its .py source into the committed .ipynb (CPU defaults),
# in reading order, so that 06 sees the toy results written by 04 and 05.
# papermill executes, with the widget cells off (headless execution of ipywidgets can deadlock:
# jupyter/nbclient#312); the book and nbval skip those cells by their tags.
notebooks: venv
	rm -rf notebooks/runs
	for f in notebooks/[0-9]*.py; do echo "executing $$f"; \
	  $(BIN)/jupytext --to ipynb --update --set-kernel python3 $$f && \
	  $(BIN)/papermill $${f%.py}.ipynb $${f%.py}.ipynb --cwd notebooks -k python3 --language python \
	    $$(grep -q '^show_widgets *=' $$f && echo -p show_widgets False) && $(BIN)/python -c "$$DROP_INJECTED" $${f%.py}.ipynb || exit 1; done
