# The two commands of the README. Each one installs what it needs on a fresh Debian/Ubuntu machine.
SHELL := /bin/bash

.PHONY: demo test test-stress setup build bench soak clean

demo: setup
	@. scripts/env.sh && node dist/tools/cli/main.js demo --once --dir .local/demo

test:
	@bash scripts/test.sh

# Not part of `make test`: the whole suite, as CI runs it, with a CPU hog on every core, three times in a row.
test-stress:
	@bash scripts/test-stress.sh 3

setup:
	@bash scripts/setup.sh

build: setup

bench: setup
	@. scripts/env.sh && npm run --silent bench:xmldsig -- --json && npm run --silent bench:hsm -- --json && npm run --silent bench:floor -- --json && npm run --silent bench:audit -- --json && npm run --silent bench:spi -- --json && npm run --silent bench:e2e -- --json && npm run --silent bench:kms -- --json

clean:
	rm -rf dist .tap .local

# Five minutes at 100 req/s through the proxy: memory and event-loop delay must show no growth trend.
soak: setup
	@. scripts/env.sh && npm run --silent bench:soak -- --json
