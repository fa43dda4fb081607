# The Sluice operator image: the wheel built in one stage, installed into a slim
# Python in the next, run as a non-root user with nothing else in the image.
#
#   docker build -t sluice/operator:0.1.0 .
#
# The user (65532:65532) is the one helm/sluice/values.yaml runs as; the chart
# mounts /tmp and keeps the root filesystem read-only.
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# PEP 517 build in an isolated environment; tests/integration/test_wheel.py does the same.
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

FROM python:${PYTHON_VERSION}-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /dist/*.whl /tmp/wheels/
RUN pip install /tmp/wheels/*.whl \
 && rm -rf /tmp/wheels \
 && groupadd --gid 65532 sluice \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin sluice
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["sluice"]
CMD ["run"]
