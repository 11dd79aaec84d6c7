"""The lessons as a course: their jupytext sources, the student and instructor editions, the grader,
offline figures, HTML export and the pre-trained runs pack.

* :mod:`lab.lessons.sources`  — ``notebooks/NN_*.py`` (jupytext percent format) → ``notebooks/NN_*.ipynb``;
* :mod:`lab.lessons.editions` — the student edition (solutions → ``answer = None``, instructor notes removed);
* :mod:`lab.lessons.exercises` — every exercise's expected value, computed from ``lab`` at run time;
* :mod:`lab.lessons.grade`    — executes submissions and tabulates each check's verdict;
* :mod:`lab.lessons.offline`  — Altair and plotly figures with their JavaScript inlined (no CDN);
* :mod:`lab.lessons.export`   — executed lessons as self-contained HTML;
* :mod:`lab.lessons.pack`     — ``runs/lessons/<preset>`` as one archive for a classroom;
* :mod:`lab.lessons.server`   — the JupyterLab server ``make lab`` starts, and running a lesson in its kernel;
* :mod:`lab.lessons.studentpack` — what a student receives (``make student-pack``), and the solutions edition;
* :mod:`lab.lessons.quiz`     — the self-check quizzes (``notebooks/quizzes/NN.json``): rendered, read back, graded;
* :mod:`lab.lessons.update`   — ``lessons update``: a student's folder to a new release, answers kept;
* :mod:`lab.lessons.site`     — the docs and the lessons as one offline static site (``make site``).
"""
