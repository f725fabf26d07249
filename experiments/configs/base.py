"""What the presets on real data share: the cpu sweep dir (runs/cpu), its unet8 teacher and unet4 students on a
2-core CPU. A preset takes it whole (`{**CPU, "grid": ...}`) and overrides what differs."""

CPU = {
    # presets named "cpu" share runs/cpu: one teacher, and runs that several presets plan are trained once
    "name": "cpu",
    "data": "cache/tgs.npz",  # python -m data.prepare --data KAGGLE_ZIP --out cache/tgs.npz --max-unlabelled 1000
    # unet8: 488 k params, 20 epochs, about 85 minutes on one core
    "teacher": {"base_filters": 8, "epochs": 20},
    # the teacher's logits computed once (teacher.cache): a KD epoch then costs what a baseline epoch costs
    "teacher_cache": True,
    # unet4: 123 k params (1/4 of the teacher), 15 epochs, about 25-30 minutes a run on one core
    "student": {"base_filters": 4, "epochs": 15},
    "seeds": [0, 1, 2],  # three seeds, paired by seed against the baseline
}
