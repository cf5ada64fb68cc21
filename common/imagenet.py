"""The ImageNet pixel statistics (RGB, 0-1 scale) that ImageNet-pretrained backbones expect of their input.

TSM, TSM-FFN and TEA normalise with them (torchvision's ResNet convention); a model's input spec says which
statistics it uses, and the loader applies them.
"""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
