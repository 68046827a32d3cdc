"""Everything that built the shipped default model: data (data.py), training (train.py), evidence (report.py)."""
