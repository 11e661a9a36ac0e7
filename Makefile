# make run   - create .venv, install, migrate, serve on http://localhost:$(PORT) (embedded defaults)
# make run-scaled - the production topology on this machine (nginx on $(PORT), two web processes,
#              a worker, PostgreSQL, Redis, the local engine), in the foreground; docs/deployment.md
# make test  - lint, type-check and run the whole suite
# make superuser          - create an admin account (the database and settings of `make run`)
# make api-key NAME=...   - create an integrator's API key, printed once
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 5000
HOST ?= 127.0.0.1
# Local mode unless told otherwise: DEBUG on, the embedded engine when OPENAI_API_KEY is unset.
DEBUG ?= true
export PORT DEBUG

.PHONY: run run-scaled test install lint format messages bench soak clean superuser api-key

$(BIN)/.installed: requirements.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

install: $(BIN)/.installed

run: install
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	$(BIN)/python manage.py serve --host $(HOST) --port $(PORT)

# The first steps after `make run`, with its settings (DEBUG and PORT are exported above), so a
# newcomer never has to know that management commands outside make need DEBUG=true. A script sets
# DJANGO_SUPERUSER_USERNAME, _EMAIL and _PASSWORD (Django's own variables) and is not prompted.
superuser: install
	$(BIN)/python manage.py migrate --noinput --verbosity 0
	$(BIN)/python manage.py createsuperuser $(if $(DJANGO_SUPERUSER_PASSWORD),--noinput)

api-key: install
	@test -n "$(NAME)" || { echo 'Name the key: make api-key NAME="standard téléphonique"' >&2; exit 2; }
	$(BIN)/python manage.py migrate --noinput --verbosity 0
	$(BIN)/python manage.py create_api_key "$(NAME)"

# honcho runs deploy/Procfile; data (PostgreSQL, nginx's files, the environment) stays in var/.
run-scaled: install
	$(BIN)/python -m deploy.scaled prepare --port $(PORT) --var var
	$(BIN)/honcho -f var/Procfile -e var/run-scaled.env -d . start

test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python manage.py makemigrations --check --dry-run --verbosity 0
	# Three workers on two cores: the suite mostly waits on real servers, calls and timeouts (one
	# worker keeps a load average under 1), and each worker has its own database and servers.
	$(BIN)/python -m pytest -n 3 -m "not topology"
	# Again on a real PostgreSQL (and Redis), started and stopped by deploy/servers.py: the tests of
	# locks, races, leases and crash recovery, and the topology tests (nginx, two web processes).
	# Two workers, each with its own test database; a file stays on one worker, so each topology
	# test module starts its topology once (and each topology has ports of its own, SIP's too).
	$(BIN)/python -m deploy.servers with -- $(BIN)/python -m pytest -n 2 --dist loadfile -m "postgresql or topology"

lint: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

messages: install
	$(BIN)/python manage.py makemessages --locale fr --ignore '.venv/*' --ignore 'tests/*' --ignore 'bench/*'
	$(BIN)/python manage.py makemessages --locale fr --domain djangojs --ignore '.venv/*' --ignore 'staticfiles/*'
	$(BIN)/python manage.py compilemessages --ignore '.venv/*'

bench: install
	$(BIN)/python bench/create_concurrency.py
	$(BIN)/python bench/sideband_ingest.py
	$(BIN)/python bench/ws_fanout.py

# Four minutes of churn (10 calls/s) against the local engine; see docs/benchmarks.md, "Soak".
soak: install
	$(BIN)/python bench/soak.py --rate 10 --seconds 240 --warmup 30

clean:
	rm -rf $(VENV) staticfiles
