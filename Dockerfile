# One image for every taskhub service; compose.yaml picks the command.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
COPY pyproject.toml README.md alembic.ini ./
COPY backend ./backend
COPY migrations ./migrations
RUN pip install -e .
RUN useradd --create-home taskhub
USER taskhub
# Generated files (the admin token when TASKHUB_TOKENS is empty) go where the user can write.
ENV TASKHUB_DATA_DIR=/home/taskhub/.taskhub
ENTRYPOINT ["taskhub"]
CMD ["up"]
