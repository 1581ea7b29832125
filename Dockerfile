# Multi-stage build of pettracker and firmware-sim. Not exercised in CI (no Docker engine there).
FROM rust:1.95-bookworm AS build
# build.rs fetches the web app's libraries with npm (web/package-lock.json).
RUN apt-get update && apt-get install -y --no-install-recommends nodejs npm \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p pettracker -p firmware-sim

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home /var/lib/pettracker --create-home pettracker
COPY --from=build /src/target/release/pettracker /src/target/release/firmware-sim /usr/local/bin/
COPY broker-config /etc/pettracker
USER pettracker
WORKDIR /var/lib/pettracker
EXPOSE 1883 8883 8083 8080
ENTRYPOINT ["pettracker"]
CMD ["serve", "--config", "/etc/pettracker/production.toml"]
