# The api, tracking and worker processes (one image, three commands).
FROM python:3.12-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md ./
COPY activities activities
COPY api api
COPY cli cli
COPY core core
COPY db db
COPY definitions definitions
COPY profiles profiles
COPY segments segments
COPY tracking tracking
COPY workflows workflows
COPY workspaces workspaces
COPY worker worker
RUN pip install --no-cache-dir .
EXPOSE 3001 3002
CMD ["mp", "api"]
