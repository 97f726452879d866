# The trainer image: python -m app on the official TensorFlow GPU image. It also serves TensorBoard
# (the tensorboard service runs it with another entry point), so there is one image to build.
# The one place the TensorFlow version is written: the image name carries none, tests/e2e reads it
# from here, and tests/unit/test_versions.py checks the requirements files, their locks and the rest
# against it.
ARG TF_VERSION=2.21.0
# Any image with python3, pip and TensorFlow ${TF_VERSION} will do (make e2e uses a local stand-in).
# Compose passes BASE_IMAGE only when it is set, so this default holds otherwise. A tag can be moved
# to another image; a digest cannot: BASE_IMAGE=tensorflow/tensorflow:X.Y.Z-gpu@sha256:<digest> builds
# on exactly that image (docs/containers.md, "Pinning the base image").
ARG BASE_IMAGE=tensorflow/tensorflow:${TF_VERSION}-gpu
FROM ${BASE_IMAGE} AS trainer

ARG TF_VERSION
# 1: install the CUDA and cuDNN 9 libraries that TensorFlow needs from PyPI (about 3 GB). The
# official -gpu images since 2.18 ship cuDNN 8.9, with which TensorFlow silently sees no GPU
# (tensorflow/build#217, #221; tensorflow/tensorflow#62412). 0: CPU-only builds skip it.
ARG CUDA_WHEELS=1
# The default user; compose runs the containers as the host user instead (HOST_UID, HOST_GID).
ARG UID=1000
ARG GID=1000

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    KERAS_HOME=/cache/keras \
    XDG_CACHE_HOME=/cache \
    TF_CPP_MIN_LOG_LEVEL=1

# Every pip install here is from a lock file, each file checked against its hash (pip-install).
COPY docker/image/pip-install /usr/local/bin/pip-install

# The big, rarely changing layer first: the nvidia-* wheels of tensorflow[and-cuda] of the same
# version, from their lock (requirements-cuda.in says how it is made); ld.so is pointed at them so
# that they win over older copies in the image.
COPY requirements-cuda.txt /tmp/requirements-cuda.txt
RUN --mount=type=secret,id=ca,required=false \
    if [ "${CUDA_WHEELS}" = 1 ]; then \
        pip-install -r /tmp/requirements-cuda.txt \
        && python3 -c "import glob, nvidia; print(*sorted(g for p in nvidia.__path__ for g in glob.glob(p + '/*/lib')), sep='\n')" \
            > /etc/ld.so.conf.d/000-nvidia-wheels.conf \
        && ldconfig; \
    fi

# requirements.txt is the lock of requirements.in: resolved with the base image's TensorFlow, which it
# leaves in place (what they share is pinned at versions TensorFlow accepts).
COPY requirements.txt /tmp/requirements.txt
RUN --mount=type=secret,id=ca,required=false \
    pip-install -r /tmp/requirements.txt \
    && python3 -c "import tensorflow as tf, tensorboard; assert tf.__version__ == '${TF_VERSION}', tf.__version__"

# A home for the keras.datasets cache and the picture cache (app/picture_cache.py) that any UID can
# write: a fresh named volume copies it.
RUN groupadd --gid "${GID}" trainer \
    && useradd --uid "${UID}" --gid "${GID}" --no-create-home --shell /usr/sbin/nologin trainer \
    && mkdir -p /cache/keras /app/logs \
    && chmod 1777 /cache /cache/keras

WORKDIR /app
COPY app ./app
# The shipped sweep files (a few hundred bytes), so the image alone runs python -m app.sweep
# sweeps/default.yaml; compose mounts ./sweeps over them, so edited ones need no rebuild.
COPY sweeps ./sweeps
USER ${UID}:${GID}

# Exec form: flags pass straight through, and SIGTERM from `docker stop` reaches Python.
ENTRYPOINT ["python3", "-m", "app"]
CMD []

# The notebook image (make notebook; docs/notebook.md): JupyterLab on the trainer's image, a target
# of its own so that the trainer image does not grow. Compose builds the trainer with target: trainer.
FROM trainer AS notebook
ARG UID=1000
ARG GID=1000
USER 0:0
COPY requirements-notebook.txt /tmp/requirements-notebook.txt
RUN --mount=type=secret,id=ca,required=false \
    pip-install -r /tmp/requirements-notebook.txt
COPY docker/image/jupyter_server_config.py /etc/jupyter/jupyter_server_config.py
# The copy in the image; compose mounts ./notebooks over it, so the user's edits stay on the host.
COPY notebooks ./notebooks
# The %tensorboard magic draws its frame at this address instead of the browser's host and
# TensorBoard's own port, which the container does not publish: jupyter-server-proxy serves
# /proxy/<port>/ from the kernel's TensorBoard through Jupyter's port (as jupyter/docker-stacks'
# tensorflow-notebook does; the trailing slash is required).
ENV TENSORBOARD_PROXY_URL=/proxy/%PORT%/
USER ${UID}:${GID}
EXPOSE 8888
ENTRYPOINT ["jupyter", "lab"]
CMD []

# Last, so that a plain `docker build .` gives the trainer image, as before the notebook target.
FROM trainer AS default
