#!/usr/bin/env bash
# Installs the deployment tools that tests/deploy/ needs: helm, kubeconform, helm-docs (which
# writes the values table of helm/kafka-8x8-connector/README.md from values.yaml) and promtool
# (which checks the chart's PrometheusRule and unit-tests its alerts). They are built
# from source with `go install` through the Go module proxy (no download of release binaries),
# into a cache OUTSIDE the checkout:
#
#   ${CONNECTOR_DEVSTACK_HOME:-$HOME/.cache/kafka-8x8-connector}/bin/{helm,kubeconform,helm-docs,promtool}
#
# GOPATH, GOMODCACHE and GOCACHE live in the same cache, so a second run is instant: a tool is
# rebuilt only when its pinned version changes (a stamp file records the version installed).
# Idempotent; safe to run before every test run.
#
# Kubernetes JSON schemas for kubeconform come from the `kubernetes-validate` PyPI package (in the
# dev extra), not from the internet: see tests/deploy/conftest.py.
#
# Last, browser.sh beside this script installs Debian's chromium and chromium-driver for the
# console's browser tests (tests/console/), unless they are on PATH already.
set -euo pipefail

HELM_MODULE="helm.sh/helm/v4"
HELM_VERSION="${CONNECTOR_HELM_VERSION:-v4.3.1}"
KUBECONFORM_VERSION="${CONNECTOR_KUBECONFORM_VERSION:-v0.8.0}"
HELM_DOCS_VERSION="${CONNECTOR_HELM_DOCS_VERSION:-v1.14.2}"
# Prometheus' Go module numbers its releases v0.<major><minor>.<patch>: v0.316.0 is Prometheus 3.16.0.
PROMETHEUS_VERSION="${CONNECTOR_PROMETHEUS_VERSION:-v0.316.0}"

HOME_DIR="${CONNECTOR_DEVSTACK_HOME:-${HOME}/.cache/kafka-8x8-connector}"
BIN_DIR="${HOME_DIR}/bin"
mkdir -p "${BIN_DIR}"

export GOPATH="${HOME_DIR}/go"
export GOMODCACHE="${HOME_DIR}/go/mod"
export GOCACHE="${HOME_DIR}/go/build-cache"
export GOBIN="${BIN_DIR}"
export CGO_ENABLED=0
# Build outside any go.mod, never touching the checkout.
export GOFLAGS="-trimpath"
unset GOWORK || true

# install NAME PACKAGE@VERSION [LDFLAGS]
install_tool() {
    local name="$1" pkg="$2" ldflags="${3:-}"
    local stamp="${BIN_DIR}/.${name}.version"
    if [[ -x "${BIN_DIR}/${name}" && -f "${stamp}" && "$(cat "${stamp}")" == "${pkg} ${ldflags}" ]]; then
        echo "${name}: ${pkg} already installed in ${BIN_DIR}"
        return 0
    fi
    if ! command -v go >/dev/null 2>&1; then
        echo "devstack/tools/install.sh: the 'go' command is needed to build ${name}" >&2
        exit 1
    fi
    echo "${name}: building ${pkg} (helm takes about 5 minutes on 2 cores the first time)..."
    local start=${SECONDS}
    (cd "${HOME_DIR}" && go install -ldflags="${ldflags}" "${pkg}")
    printf '%s' "${pkg} ${ldflags}" >"${stamp}"
    echo "${name}: installed ${BIN_DIR}/${name} in $((SECONDS - start))s"
}

install_tool helm "${HELM_MODULE}/cmd/helm@${HELM_VERSION}" \
    "-s -w -X ${HELM_MODULE}/internal/version.version=${HELM_VERSION}"
install_tool kubeconform "github.com/yannh/kubeconform/cmd/kubeconform@${KUBECONFORM_VERSION}" \
    "-s -w -X main.version=${KUBECONFORM_VERSION}"
install_tool helm-docs "github.com/norwoodj/helm-docs/cmd/helm-docs@${HELM_DOCS_VERSION}" \
    "-s -w -X main.version=${HELM_DOCS_VERSION#v}"
PROMETHEUS_RELEASE="${PROMETHEUS_VERSION#v0.}"
install_tool promtool "github.com/prometheus/prometheus/cmd/promtool@${PROMETHEUS_VERSION}" \
    "-s -w -X github.com/prometheus/common/version.Version=${PROMETHEUS_RELEASE:0:1}.${PROMETHEUS_RELEASE:1}"

"${BIN_DIR}/helm" version --short
echo "kubeconform $("${BIN_DIR}/kubeconform" -v)"
"${BIN_DIR}/helm-docs" --version
"${BIN_DIR}/promtool" --version | sed -n 1p  # sed reads it all: no SIGPIPE under pipefail
echo "tools in ${BIN_DIR}"

"$(dirname "${BASH_SOURCE[0]}")/browser.sh"
