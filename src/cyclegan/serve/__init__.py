"""Web app and HTTP API: upload a photo, get it back translated by a trained generator.

``cyclegan serve`` loads models once (``models.load_models``), builds the FastAPI app
(``app.create_app``) and runs it under uvicorn (``server.run_server``). Inference goes through
``cyclegan.translate.Translator``, the same full-resolution, tiled path as ``cyclegan translate``.

Nothing here imports FastAPI at package import time, so ``cyclegan`` works without the ``serve``
extra; the modules that need it are imported only by the ``serve`` command and the tests.
"""
