# A REST server for one logged retina-seg model: `retina-seg-serve`, the command the test suite runs (MLflow's
# scoring server behind the request guard that caps bodies at serve.max_body_mb).
#
#   mlflow artifacts download -u models:/retina-seg@champion -d model     # or runs:/<run id>/model
#   docker build -t retina-seg-serve --build-arg MODEL_DIR=model .
#   docker run --rm -p 127.0.0.1:5001:5001 retina-seg-serve              # publish on the host's loopback only
#
# With keys, TLS and two workers (the files mounted read-only; the command replaces CMD):
#   docker run --rm -p 127.0.0.1:5001:5001 -v $PWD/secrets:/secrets:ro retina-seg-serve retina-seg-serve /model \
#     --host 0.0.0.0 --port 5001 --workers 2 --api-keys /secrets/keys --ssl-certfile /secrets/server.pem \
#     --ssl-keyfile /secrets/server-key.pem
# Behind a load balancer or an orchestrator: /health is the readiness check, /ping the liveness check, and
# Prometheus scrapes /metrics of each container (deploy/prometheus).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# retina_seg/conf links to conf/: copy both, the wheel then holds the configs themselves
COPY pyproject.toml README.md LICENSE ./
COPY conf ./conf
COPY retina_seg ./retina_seg
RUN pip install . && rm -rf /src && useradd --create-home --uid 10001 serve

ARG MODEL_DIR=model
COPY ${MODEL_DIR} /model
USER serve
WORKDIR /home/serve
EXPOSE 5001
# 0.0.0.0 inside the container only, so that `docker run -p 127.0.0.1:5001:5001` can reach it
CMD ["retina-seg-serve", "/model", "--host", "0.0.0.0", "--port", "5001"]
