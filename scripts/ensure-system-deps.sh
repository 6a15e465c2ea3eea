#!/usr/bin/env bash
# Installs the system tools the tests use, if missing, from Debian packages:
#   openssl          the openssl CLI checks our certificates
#   rsyslog(-gnutls) a real syslog receiver (RFC 5424/5425) for the SIEM export tests
#   prometheus       a real Prometheus server scrapes every process's /metrics in the metrics tests
#   chromium         a real browser (driven by playwright-core) for the web console's tests
#   libnss3-tools    certutil: those tests make Chromium trust the test CA through its NSS database
#   haproxy          the HAProxy data plane (`tessera agent --data-plane haproxy`) and its tests
#   postgresql       a real PostgreSQL (test/support/postgres.ts) for the `--store postgres://` tests
# The packages' own services are not used: tests start their own daemons on 127.0.0.1 in temp directories.
set -euo pipefail
need=()
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v rsyslogd >/dev/null 2>&1 || need+=(rsyslog)
[ -e /usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so ] || [ -n "$(find /usr/lib -name lmnsd_gtls.so 2>/dev/null | head -1)" ] || need+=(rsyslog-gnutls)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v certutil >/dev/null 2>&1 || need+=(libnss3-tools)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing: ${need[*]} (install them, or run as root so this script can)" >&2
    exit 1
  fi
  echo "installing ${need[*]} from Debian packages..."
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
