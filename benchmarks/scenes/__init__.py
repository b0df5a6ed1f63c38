"""The Fashion-MNIST scenes and the experiments tried on them (regression records, not library features).

generator.py builds COCO detection / instance / semantic scenes from real Fashion-MNIST garments;
style.py and pretraining.py draw Fashion-MNIST in the scenes' look for classification pretraining;
prior.py, losses.py, refine.py and experiments.py (the time budget, the task) are the segmentation preset's
additions to the paper's recipe.
"""
