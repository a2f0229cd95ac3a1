# GeoWeb: `make run` sets up and starts the app on embedded defaults; `make test` sets up and runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: setup run test test-fast chromium assets demo-model clean geoclip-wheel

$(BIN)/.installed: requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund

assets: $(BIN)/.installed node_modules/.package-lock.json
	$(BIN)/python manage.py build_assets

setup: assets
	$(BIN)/python manage.py migrate --noinput

# The embedded app: SQLite, in-memory channel layer, the inference worker inside the web process, CPU or GPU.
run: setup
	$(BIN)/python manage.py ensure_demo_model
	$(BIN)/python manage.py import_game_images
	$(BIN)/python manage.py clean_game_photos
	$(BIN)/python manage.py build_basemap
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	$(BIN)/daphne -b $(HOST) -p $(PORT) geoweb.asgi:application

# Debian's Chromium drives the browser tests (Playwright's own browser download is never used).
chromium:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium)

# The GeoCLIP tests read the geoclip wheel's weights and gallery (never installed: its pins clash with ours).
GEOCLIP_WHEEL := .cache/geoclip/geoclip-1.3.0-py3-none-any.whl
$(GEOCLIP_WHEEL): | $(BIN)/.installed
	$(BIN)/pip download --quiet --disable-pip-version-check --no-deps --dest .cache/geoclip geoclip==1.3.0
geoclip-wheel: $(GEOCLIP_WHEEL)

test: assets chromium geoclip-wheel
	$(BIN)/python -m pytest

test-fast: assets geoclip-wheel
	$(BIN)/python -m pytest -m "not browser"

clean:
	rm -rf $(VENV) node_modules static/vendor staticfiles
