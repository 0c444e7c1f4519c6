"""The command-line tools, installed as console commands (pyproject.toml's ``[project.scripts]``):

* ``attnzoo-train`` (:mod:`.train`), ``attnzoo-test`` (:mod:`.test`): mmengine's Runner on a config; they need
  the ``[train]`` extra (mmengine), and name it when it is missing.
* ``attnzoo-benchmark`` (:mod:`.benchmark`), ``attnzoo-convert`` (:mod:`.convert_weights`),
  ``attnzoo-sr`` (:mod:`.sr`), ``attnzoo-publish`` (:mod:`.publish`: a training checkpoint -> timm weights),
  ``attnzoo-export`` (:mod:`.export`: torch.export / ONNX; ONNX needs the ``[export]`` extra).
* :mod:`.configs`: the configs shipped in the package, ``attnzoo::<task>/<name>.py``.

``tools/<name>.py`` in a checkout runs the same ``main``.
"""
