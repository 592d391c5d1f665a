# The two commands a newcomer needs: `make test` and `make demo`.
VENV ?= .venv
PY := $(VENV)/bin/python
# Tests and tools talk to loopback only; DDS discovery stays on this host.
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST

.PHONY: setup test test-jazzy test-kilted demo lint bench faults soak clean

setup:
	@bash scripts/setup-dev.sh

# Each ROS distro whose wheels are on PyPI: the whole suite on Jazzy, then the tests that touch
# rclpy or the message packages (marker `ros`) on Kilted. Each leg prints its wall time; both
# legs run even when the first fails.
KILTED_VENV ?= .venv-kilted

test: setup
	$(PY) -m ruff check src test bench launch
	@$(MAKE) --no-print-directory --keep-going test-jazzy test-kilted

test-jazzy:
	@t0=$$(date +%s); $(PY) -m pytest; rc=$$?; \
	  echo "make test: Jazzy leg (whole suite) took $$(( $$(date +%s) - t0 )) s"; exit $$rc

test-kilted:
	@t0=$$(date +%s); $(KILTED_VENV)/bin/python -m pytest -m ros; rc=$$?; \
	  echo "make test: Kilted leg (-m ros) took $$(( $$(date +%s) - t0 )) s"; exit $$rc

# Two simulated Dexters teleoperated through a private local room; report in demo-report/.
demo: setup
	$(VENV)/bin/jitsi-teleop demo --report demo-report

lint: setup
	$(PY) -m ruff check src test bench launch
	$(PY) -m ruff format --check src test bench

bench: setup
	$(PY) bench/bench_driver.py --json bench/results/driver.json
	$(PY) bench/bench_slowpath.py --json bench/results/slowpath.json
	$(PY) bench/bench_teleop_stability.py
	$(VENV)/bin/jitsi-teleop bench --json bench/results/fastpath.json
	$(PY) bench/bench_ros_overhead.py --json bench/results/ros_overhead.json

# The fault campaign (issue 18): every part's full run, one after the other (hours on two
# cores). Each part writes its section of bench/results/faults.json; run one alone with
# `$(PY) bench/faults.py <part>`.
faults: setup
	$(PY) bench/faults.py all

# The soak alone (part 5): the demo's two sites at 500 Hz both ways for an hour; writes the
# `soak` section of bench/results/faults.json.
soak: setup
	$(PY) bench/faults.py soak --minutes 60

clean:
	rm -rf $(VENV) $(KILTED_VENV) build install log .pytest_cache demo-report
