# Native TLS: a development CA and certificates (rcgen) for the demo and the tests, and
# the TLS tests. Included from the root Makefile; also usable alone:
# `make -f mk/tls.mk certs`.
#
# `make certs` writes CERTS_DIR/ca.crt and one directory per identity (gateway, executor,
# marketdata, orchestrator) holding tls.crt, tls.key and ca.crt, the layout of a mounted
# Kubernetes TLS Secret. Point a service at it with, for example:
#   EXECBRIDGE_GATEWAY_SERVER__TLS__MODE=native
#   EXECBRIDGE_GATEWAY_SERVER__TLS__CERT_FILE=.certs/gateway/tls.crt
#   EXECBRIDGE_GATEWAY_SERVER__TLS__KEY_FILE=.certs/gateway/tls.key
#   EXECBRIDGE_GATEWAY_SERVER__TLS__CA_FILE=.certs/gateway/ca.crt

CARGO     ?= cargo
CERTS_DIR ?= .certs
CERT_DAYS ?= 30

.PHONY: certs clean-certs test-tls

certs: ## Dev CA and certificates (rcgen) in CERTS_DIR (default .certs/) for native TLS.
	$(CARGO) run --quiet -p execbridge-devcerts -- --out $(CERTS_DIR) --days $(CERT_DAYS)

clean-certs: ## Remove the dev certificates.
	rm -rf $(CERTS_DIR)

test-tls: ## Native mTLS: rotation under load, refusals, the three services over mTLS.
	$(CARGO) test -p execbridge-runtime --test tls
	$(CARGO) test -p execbridge-devcerts
