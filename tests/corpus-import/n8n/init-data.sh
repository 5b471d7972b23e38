#!/bin/sh
# Creates the non-root user n8n connects as (a stand-in for the published psql script).
set -e
if [ -n "${POSTGRES_NON_ROOT_USER:-}" ] && [ -n "${POSTGRES_NON_ROOT_PASSWORD:-}" ]; then
  echo "user ${POSTGRES_NON_ROOT_USER}" > /var/lib/postgresql/data/initialized
else
  echo "SETUP INFO: No Environment variables given!"
fi
