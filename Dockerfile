# recgate's container image. Build: `docker build -t recgate .` (or `podman build`); run:
#   docker run -v recgate-data:/data -p 8080:8080 --env-file .env recgate
# Every setting comes from the environment variables of the README's configuration table; the image sets
# only where it listens and where its data lives. `npm run test:container` builds and runs this file.
ARG BASE_IMAGE=node:20-bookworm-slim

# Production dependencies only. better-sqlite3's native addon is compiled here, against the headers of the
# Node.js that will run it, so the compilers never reach the final image.
FROM ${BASE_IMAGE} AS deps
WORKDIR /app
RUN if ! command -v python3 >/dev/null || ! command -v make >/dev/null || ! command -v g++ >/dev/null; then \
      apt-get update \
      && apt-get install -y --no-install-recommends python3 make g++ \
      && rm -rf /var/lib/apt/lists/*; \
    fi
COPY package.json package-lock.json ./
# Scripts off for the install (the package's own `prepare` needs the dev dependencies), then only
# better-sqlite3's is run: a prebuilt binary where one can be downloaded, else a build with node-gyp, which
# uses the headers installed beside `node` when they are there instead of downloading them.
RUN prefix="$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")"; \
    if [ -f "$prefix/include/node/node_version.h" ]; then export npm_config_nodedir="$prefix"; fi; \
    npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
    && npm rebuild better-sqlite3 \
    && npm cache clean --force

# The TypeScript build, with the dev dependencies it needs; only dist/ leaves this stage.
FROM ${BASE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npx tsc -p tsconfig.build.json

FROM ${BASE_IMAGE}
# The data dir (SQLite call log, recordings/) is a volume owned by the unprivileged user the gateway runs
# as. RECGATE_HOST: a container must listen on every interface to be reachable at all.
ENV RECGATE_HOST=0.0.0.0 \
    RECGATE_PORT=8080 \
    RECGATE_DATA_DIR=/data
RUN groupadd --gid 10001 recgate \
    && useradd --uid 10001 --gid recgate --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin recgate \
    && mkdir -p /data/recordings \
    && chown -R recgate:recgate /data
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
COPY bin ./bin
COPY ui ./ui
COPY deploy/docker/healthcheck.mjs ./healthcheck.mjs
COPY deploy/docker/entrypoint.sh /usr/local/bin/recgate-entrypoint
USER recgate
VOLUME ["/data"]
EXPOSE 8080
# /healthz is liveness: 200 while the process runs, draining included. Readiness (/readyz) is the load
# balancer's business (compose and Kubernetes probe it themselves).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 CMD ["node", "/app/healthcheck.mjs"]
# Exec form, and the entrypoint execs Node: SIGTERM reaches recgate itself, which drains and exits 0.
ENTRYPOINT ["/usr/local/bin/recgate-entrypoint"]
CMD ["serve"]
