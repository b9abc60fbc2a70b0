# The collector as a sidecar image. Runs as root with every capability dropped but
# DAC_READ_SEARCH (compose sets that), so it can read Docker's 0640 root log files.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY collector ./collector
RUN pip install --no-cache-dir . && rm -rf /root/.cache
COPY config.yaml /etc/collector/config.yaml
ENV COLLECTOR_CONFIG=/etc/collector/config.yaml
VOLUME /var/lib/collector
EXPOSE 9180
ENTRYPOINT ["collector"]
