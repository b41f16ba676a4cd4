# cutover: `make demo` runs a whole release against a local AWS; `make test` runs every test.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        ?= .venv
LINT_VENV   ?= .venv-lint
PYTHON      ?= python3
CARGO       ?= cargo
TARGET_DIR  := $(or $(CARGO_TARGET_DIR),target)
BIN_DIR     := $(TARGET_DIR)/debug
EVENT       ?= events/provision.json
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: help setup build test soak demo serve rollback lint lint-rust lint-infra bench package deploy deploy-service destroy-service

help: ## List the targets
	@grep -hE '^[a-zA-Z_%-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(VENV)/.dev-installed: requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

setup: $(VENV)/.dev-installed ## Create .venv with moto[server] and cargo-lambda (pinned)

build: ## Build the workspace (the four functions, the library, the local tools)
	$(CARGO) build --workspace --locked

test: setup build ## Run every test (unit, moto integration, infra checks)
	$(CARGO) test --workspace --locked

soak: ## The release model (plan/tests/model/) over many more cases than `make test`; a failure keeps its seed in proptest-regressions/
	PROPTEST_CASES=$(or $(CASES),20000) $(CARGO) test --locked -p cutover --lib plan::tests::model

demo: setup build ## Run a whole release against a local AWS (non-interactive with --yes or CI; FLEET=asg: releases as Auto Scaling groups)
	$(BIN_DIR)/cutover-local demo $(if $(or $(CI),$(YES)),--yes,) $(if $(FLEET),--fleet $(FLEET),)

serve: setup build ## Keep a local AWS and the four functions running for invoke-%
	$(BIN_DIR)/cutover-local serve

invoke-%: ## Invoke one function of `make serve`: make invoke-provision EVENT=events/provision.json
	cargo-lambda lambda invoke $* --data-file $(EVENT) -A 127.0.0.1 -P $$(cat target/cutover-local/lambda-port)

rollback: ## Roll a service back by hand against `make serve`: make rollback SERVICE=mobile-zum-api
	@test -n "$(SERVICE)" || { echo "make rollback SERVICE=<service>"; exit 2; }
	cargo-lambda lambda invoke switch-listener --data-ascii '{"service": "$(SERVICE)", "action": "rollback"}' \
	  -A 127.0.0.1 -P $$(cat target/cutover-local/lambda-port)

plan-%: ## Print what a function would do (dry run): make plan-switch-listener EVENT=events/switch-listener.json
	@$(PYTHON) -c 'import json,sys; e=json.load(open(sys.argv[1])); c=e["CodePipeline.job"]["data"]["actionConfiguration"]["configuration"]; p=json.loads(c["UserParameters"]); p["dry_run"]=True; c["UserParameters"]=json.dumps(p); e["CodePipeline.job"]["id"]=e["CodePipeline.job"]["id"]+"-plan"; json.dump(e,open("target/cutover-local/plan-event.json","w"))' $(EVENT)
	cargo-lambda lambda invoke $* --data-file target/cutover-local/plan-event.json -A 127.0.0.1 -P $$(cat target/cutover-local/lambda-port)

lint: lint-rust lint-infra ## rustfmt, clippy -D warnings; cfn-lint, checkov and the IAM catalogue (parliament) on infra/

lint-rust:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

# checkov pins its own boto3, so it lives in a virtualenv of its own.
$(LINT_VENV)/.installed: requirements-lint.txt
	$(PYTHON) -m venv $(LINT_VENV)
	$(LINT_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-lint.txt
	touch $@

lint-infra: setup $(LINT_VENV)/.installed
	$(VENV)/bin/cfn-lint infra/*.yaml
	BC_SKIP_MAPPING=TRUE $(LINT_VENV)/bin/checkov -d infra --skip-download --compact --quiet
	$(LINT_VENV)/bin/python infra/lint_policies.py infra/*.yaml

FUNCTIONS := provision register-target switch-listener cleanup

# Each function is built on its own, so it gets only its own cargo feature (and so only its own
# planner and the SDK clients it calls): one cargo command for all four would unify the features.
bench: setup build ## Measure init, round trips at AWS-like latency, calls, memory, size (writes bench/RESULTS.md)
	mkdir -p bench/out
	start=$$SECONDS; for f in $(FUNCTIONS) hello-lambda; do $(CARGO) build --release --locked -p $$f || exit 1; done; \
	  echo "$$((SECONDS - start)) s in this run (near 0 when already built)" > bench/out/release-build-time.txt
	rustup target add aarch64-unknown-linux-gnu || echo "bench: no arm64 target here; zips will be x86_64"
	start=$$SECONDS; for f in $(FUNCTIONS); do \
	  cargo-lambda lambda build --release --arm64 --output-format zip -p $$f || \
	  cargo-lambda lambda build --release --output-format zip -p $$f || exit 1; done; \
	  echo "$$((SECONDS - start)) s in this run (near 0 when already built)" > bench/out/zip-build-time.txt
	$(BIN_DIR)/cutover-bench $(if $(LATENCY_MS),--latency-ms $(LATENCY_MS),)

package: setup ## Release zips for Lambda (arm64, provided.al2023), each function built on its own
	for f in $(FUNCTIONS); do cargo-lambda lambda build --release --arm64 --output-format zip -p $$f || exit 1; done
	@ls -l $(TARGET_DIR)/lambda/*/bootstrap.zip

$(LINT_VENV)/.sam-installed: $(LINT_VENV)/.installed
	$(LINT_VENV)/bin/pip install --quiet --disable-pip-version-check aws-sam-cli awscli
	touch $@

# sam's cargo-lambda build looks for its binaries under ./target: a CARGO_TARGET_DIR set for the
# tests would send them elsewhere, so it is unset for the build. infra/samconfig.toml names the
# stack `cutover`; PARAMS="PrivateZoneVpcId=vpc-… PrivateZoneName=…" creates the shared zone.
deploy: setup $(LINT_VENV)/.sam-installed ## sam build (cargo-lambda) + sam deploy of the shared stack `cutover` (infra/template.yaml)
	cd infra && env -u CARGO_TARGET_DIR $(CURDIR)/$(LINT_VENV)/bin/sam build --beta-features && \
	  $(CURDIR)/$(LINT_VENV)/bin/sam deploy $(if $(PARAMS),--parameter-overrides $(PARAMS),)

SERVICE_STACK ?= $(SERVICE)
deploy-service: $(LINT_VENV)/.sam-installed ## One service, one command: make deploy-service SERVICE=news-api PARAMS="VpcId=… PublicSubnetIds=… CertificateArn=… Ami=… PrivateSubnetIds=…"
	@test -n "$(SERVICE)" || { echo "make deploy-service SERVICE=<service> PARAMS=\"VpcId=… …\""; exit 2; }
	# UNLOCK_QA_RULE=1: one deploy may update the QA rule (to add its source-ip condition to a
	# stack made before it had one); CloudFormation sends the rule's template actions back, so do
	# it while product is on blue (QA on green). The product rule stays locked.
	$(if $(UNLOCK_QA_RULE),$(LINT_VENV)/bin/aws cloudformation set-stack-policy --stack-name $(SERVICE_STACK) \
	  --stack-policy-body file://infra/service-stack-policy-qa-migration.json)
	# An update of the service stack must never move production: the two rules are cutover's, and
	# the policy that says so is set again after the deploy, whether it succeeded or not.
	$(LINT_VENV)/bin/aws cloudformation deploy --template-file infra/service.yaml --stack-name $(SERVICE_STACK) \
	  --capabilities CAPABILITY_IAM --no-fail-on-empty-changeset --parameter-overrides ServiceName=$(SERVICE) $(PARAMS); \
	  status=$$?; $(LINT_VENV)/bin/aws cloudformation set-stack-policy --stack-name $(SERVICE_STACK) \
	  --stack-policy-body file://infra/service-stack-policy.json; exit $$status

destroy-service: $(LINT_VENV)/.sam-installed ## A service's last day: make destroy-service SERVICE=news-api (its stack, fleet, addresses and records)
	@test -n "$(SERVICE)" || { echo "make destroy-service SERVICE=<service>"; exit 2; }
	$(LINT_VENV)/bin/python infra/destroy_service.py $(SERVICE) --stack $(SERVICE_STACK)
