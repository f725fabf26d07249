"""Sweep presets: one Python file per experiment, `PRESET = {...}`, its docstring says what it runs and how long.

    python -m experiments.sweep --config experiments/configs/cpu.py      # or --config cpu
    python -m experiments.sweep --config experiments/configs/cpu.json    # the older spelling runs the same preset

A preset is a dict of the keys in experiments.sweep's docstring; most start from a shared base (base.py) and
override what differs, so a comment can say why. The "student" and "teacher" sections are flags of distill_train.py
and teacher.train (field names, e.g. "base_filters"); the sweep builds every run's config from them and checks it with
the scripts' own validate before anything trains. A preset of your own may also be a JSON file of the same keys.
"""
