# One image for every service: docker-compose.yml picks the console script to run.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ST2_CONFIG_PATH=/etc/st2/st2.conf

# The runtime layout of conf/st2.prod.conf: base_path /opt/stackstorm.
RUN groupadd --system st2 \
    && useradd --system --gid st2 --home-dir /opt/stackstorm --shell /usr/sbin/nologin st2 \
    && mkdir -p /opt/stackstorm/src /opt/stackstorm/packs /opt/stackstorm/var/log \
                /opt/stackstorm/var/packs /opt/stackstorm/configs /opt/stackstorm/keys \
                /opt/stackstorm/var/auth /opt/stackstorm/var/rbac/assignments /etc/st2

WORKDIR /opt/stackstorm/src
COPY pyproject.toml README.md LICENSE ./
COPY st2common ./st2common
COPY st2api ./st2api
COPY st2sensorcontainer ./st2sensorcontainer
COPY st2rulesengine ./st2rulesengine
COPY st2actionrunner ./st2actionrunner
COPY st2workflowengine ./st2workflowengine
COPY st2client ./st2client
RUN pip install . && rm -rf build *.egg-info

COPY contrib/packs /opt/stackstorm/packs
COPY conf/st2.prod.conf /etc/st2/st2.conf
# The datastore key lives in keys/, the users in var/auth/ (their volumes start as copies): owner only.
RUN chown -R st2:st2 /opt/stackstorm && chmod 700 /opt/stackstorm/keys /opt/stackstorm/var/auth

USER st2
WORKDIR /opt/stackstorm
EXPOSE 9101 9100
CMD ["st2api"]
