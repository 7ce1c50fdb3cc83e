# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
# `make run PORT=8001` when something else already listens on 8000.
PORT ?= 8000
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run serve test lint format bench bench-smoke

run: $(VENV)/.installed .env
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput -v0
	$(BIN)/python manage.py load_demo
	@echo
	@echo "Serving on http://127.0.0.1:$(PORT) - sign in to the admin at http://127.0.0.1:$(PORT)/admin/"
	@echo "as user 'admin', password 'admin'. API docs: http://127.0.0.1:$(PORT)/api/docs/."
	@echo "Customer portal: http://127.0.0.1:$(PORT)/portal/ (try ada@example.com: the sign-in e-mail prints here)."
	@echo "Press Ctrl-C to stop."
	$(BIN)/python manage.py runserver 127.0.0.1:$(PORT)

# Production: gunicorn, settings from real environment variables (see README), refusing to start
# when `check --deploy` finds a problem (DEBUG on, missing secrets, insecure cookies...). Gunicorn's
# control socket is off: its one default path per user would be shared by every server on the host.
serve: $(VENV)/.installed
	$(BIN)/python manage.py check --deploy --fail-level WARNING
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput -v0
	$(BIN)/python manage.py create_signing_key --if-none
	exec $(BIN)/gunicorn config.wsgi:application --bind $${BIND:-0.0.0.0:8000} --workers $${WEB_CONCURRENCY:-2} \
		--worker-class gthread --threads $${WEB_THREADS:-8} --forwarded-allow-ips "$${FORWARDED_ALLOW_IPS:-127.0.0.1}" \
		--no-control-socket --pid $${PIDFILE:-gunicorn.pid}

test: $(VENV)/.installed .env
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Throughput and latency against a raw-psycopg baseline on PostgreSQL; needs wrk (apt-get install wrk).
bench: $(VENV)/.installed
	$(BIN)/python bench/run.py

# Every scenario for a couple of seconds on a small data set: proves the bench still runs, with no errors.
bench-smoke: $(VENV)/.installed
	$(BIN)/python bench/run.py --duration 2 --rounds 1 --licenses 1000 --audit-events 300

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

$(VENV)/.installed: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

# Fresh secrets for this checkout; real environment variables still win over the file.
.env: | $(VENV)/.installed
	$(BIN)/python -c 'import secrets; print("DJANGO_DEBUG=true"); print("DJANGO_SECRET_KEY=" + secrets.token_urlsafe(50)); print("LICENSE_KEY_SECRET=" + secrets.token_urlsafe(50))' > $@
	@echo "Wrote .env with new secrets (development settings)."
