# handflow: two commands do all set-up on a fresh machine.
#   make demo   - the main job end to end on the embedded defaults
#   make test   - the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
DEMO_OUT ?= demo_out

.PHONY: demo demo-quick test test-fast test-lower-bounds docs bench sysdeps clean

$(VENV)/.installed: pyproject.toml
	@$(MAKE) --no-print-directory sysdeps
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade "pip>=24"
	$(PIP) install -q -e '.[all,test]'
	@touch $@

# EGL/OpenGL runtime for the moderngl renderer (the pure-PyTorch renderer works without it).
sysdeps:
	@if ! ldconfig -p 2>/dev/null | grep -q 'libEGL.so.1'; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing EGL/Mesa runtime (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      libegl1 libegl-mesa0 libgl1 libgl1-mesa-dri >/dev/null; \
	  else echo "note: libEGL not found; rendering falls back to the PyTorch rasterizer"; fi; \
	fi

demo: $(VENV)/.installed
	$(PY) -m handflow demo --out $(DEMO_OUT)

demo-quick: $(VENV)/.installed
	$(PY) -m handflow demo --quick --out $(DEMO_OUT)

test: $(VENV)/.installed
	$(PY) -m pytest -n 2 -q

test-fast: $(VENV)/.installed
	$(PY) -m pytest -n 2 -q -m "not slow"

# the suite with every dependency at its lower bound (tools/lower_bounds.py reads them from pyproject.toml),
# in its own venv .venv-low (constraints.txt and the resolved versions, resolved.txt, are kept there); not in CI
LOW_VENV ?= .venv-low
test-lower-bounds:
	@$(MAKE) --no-print-directory sysdeps
	$(PYTHON) -m venv $(LOW_VENV)
	$(LOW_VENV)/bin/python -m pip install -q --upgrade "pip>=24"
	$(LOW_VENV)/bin/python tools/lower_bounds.py > $(LOW_VENV)/constraints.txt
	$(LOW_VENV)/bin/python -m pip install -q -e '.[all,test]' -c $(LOW_VENV)/constraints.txt
	$(LOW_VENV)/bin/python -m pip freeze --exclude-editable > $(LOW_VENV)/resolved.txt
	$(LOW_VENV)/bin/python -m pytest -n 2 -q

# the documentation site with the API reference from the docstrings, offline (~7 s): build/site/index.html
docs: $(VENV)/.installed
	$(VENV)/bin/mkdocs build --strict

bench: $(VENV)/.installed
	@for f in benchmarks/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) $(LOW_VENV) $(DEMO_OUT) .pytest_cache
