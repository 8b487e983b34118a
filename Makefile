# The two commands of the README. Each one installs what it needs on a fresh Debian/Ubuntu machine.
SHELL := /bin/bash

.PHONY: demo test setup build bench clean

demo: setup
	@. scripts/env.sh && node dist/src/cli/main.js demo --once --dir .local/demo

test:
	@bash scripts/test.sh

setup:
	@bash scripts/setup.sh

build: setup

bench: setup
	@. scripts/env.sh && npm run --silent bench:xmldsig -- --json && npm run --silent bench:hsm -- --json && npm run --silent bench:audit -- --json && npm run --silent bench:spi -- --json

clean:
	rm -rf dist .tap .local
