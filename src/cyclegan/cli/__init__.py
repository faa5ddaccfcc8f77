"""The ``cyclegan`` command line: a thin layer that turns flags into library calls.

    group      the ``main`` group: one-line errors, exit statuses (1 user error, 2 flag error, 130/143
               signals)
    train      train, distill, presets
    translate  translate
    evaluate   evaluate, analyze fourier|video, report
    models     export, import, pretrained list|get, push
    prep       prep pack|remove-background|frames|edge-smooth
    serve      serve, demo

Choices of registry-backed flags (``--generator``, ``--gan-loss``, ``import FORMAT`` ...) are read from
the registries when the commands are defined. ``cyclegan.cli:main`` is the console entry point.
"""

from cyclegan.cli.evaluate import analyze, evaluate_cmd, report_cmd
from cyclegan.cli.group import main
from cyclegan.cli.models import export_cmd, import_cmd, pretrained, push_cmd
from cyclegan.cli.prep import prep
from cyclegan.cli.serve import demo, serve_cmd
from cyclegan.cli.train import distill, presets, train
from cyclegan.cli.translate import translate_cmd

for _command in (train, distill, presets, demo, evaluate_cmd, analyze, report_cmd, translate_cmd, export_cmd,
                 prep, serve_cmd, import_cmd, pretrained, push_cmd):
    main.add_command(_command)

__all__ = ["main"]
