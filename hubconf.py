"""torch.hub entry points: a trained ssl-video backbone as a torchvision / pytorchvideo model, in one line.

    model = torch.hub.load("path/to/ssl-video", "resnet18", checkpoint="runs/walk/checkpoints/step_00010000.pt",
                           source="local")       # torchvision.models.ResNet, fc = Identity: returns 512-d features
    model = torch.hub.load("path/to/ssl-video", "x3d_xs", checkpoint=".../step_00001000.pt", source="local")

Installed, the same without torch.hub: ``ssl_video.export.load_model(checkpoint)``.
"""

dependencies = ["torch", "torchvision", "omegaconf"]


def resnet18(checkpoint: str, fc: bool = False, num_classes: int | None = None, stride8: bool | None = None):
    """torchvision ResNet-18 with the trained backbone of ``checkpoint`` (a resnet18 / resnet18_s8 / resnet18_gru run).

    ``fc=False``: ``fc`` is Identity (pooled 512-d features); ``fc=True``: a fresh, untrained ``num_classes`` head.
    ``stride8``: layer3/layer4 with stride 1 as the walk encoder was trained (default: for resnet18_s8 runs only).
    """
    from ssl_video.export import load_model

    return load_model(checkpoint, fc=fc, num_classes=num_classes, stride8=stride8, family="resnet18")


def x3d_xs(checkpoint: str, fc: bool = False, num_classes: int | None = None):
    """pytorchvideo ``create_x3d`` (X3D-XS) with the trained backbone of an x3d_xs run; ``blocks[5].proj`` is Identity
    unless ``fc=True`` (a fresh, untrained ``num_classes`` head)."""
    from ssl_video.export import load_model

    return load_model(checkpoint, fc=fc, num_classes=num_classes, family="x3d_xs")
