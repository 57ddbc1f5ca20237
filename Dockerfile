# The api, tracking and worker processes (one image, three commands).
FROM python:3.12-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY . .
RUN pip install --no-cache-dir .
EXPOSE 3001 3002
CMD ["mp", "api"]
