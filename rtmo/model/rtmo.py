"""The RTMO network: CSPDarknet -> HybridEncoder -> RTMO head, and its prediction path."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rtmo.config import RTMOConfig
from rtmo.model.backbone import CSPDarknet
from rtmo.model.head import DenseOutputs, RTMOHead
from rtmo.model.layers import fuse_conv_bn_modules
from rtmo.model.neck import HybridEncoder, RepVGGBlock
from rtmo.model.postprocess import PaddedPredictions, postprocess_padded, split_predictions


class RTMOModel(nn.Module):
    """RTMO for one variant. Parameter names equal the official checkpoints' (strict loading).

    `use_kernels=False` runs the post-process through `rtmo_kernels.reference` (NMS and mmpose's
    unfolded DCC decode) instead of the fused kernels.
    """

    def __init__(self, config: RTMOConfig, use_kernels: bool = True) -> None:
        super().__init__()
        self.config = config
        self.use_kernels = use_kernels
        self.backbone = CSPDarknet(config.deepen, config.widen)
        self.neck = HybridEncoder(
            config.backbone_channels, config.pose_vec_channels, config.deepen, config.widen
        )
        self.head = RTMOHead(config)

    def forward(self, images: Tensor) -> DenseOutputs:
        """images (B, 3, H, W) BGR 0..255, H and W multiples of 32 -> raw dense head outputs."""
        return self.head(self.neck(self.backbone(images)))

    def loss(
        self,
        images: Tensor,
        targets: list[dict[str, Tensor]],
        stage: int = 1,
        backend: str = "auto",
    ) -> dict[str, Tensor]:
        """RTMO's training losses on a batch, equal to mmpose 1.3.2's `RTMOHead.loss`.

        images (B, 3, H, W) float BGR 0..255 as `predict` takes them; targets: one dict per
        image of float tensors in model-input pixels, "boxes" (n, 4) xyxy, "keypoints"
        (n, K, 2), "keypoints_visible" (n, K) in 0..1 and optionally "areas" (n,) (default the
        box area), "keypoints_visible_weights" (n, K), "invalid_mask" (H, W); n = 0 is valid
        (see `rtmo.train.targets`). `stage` 1, 2 or 3 of RTMO's schedule picks the variant's
        `config.train_stage(stage)`. `backend` is the MLE kernel's (`rtmo_kernels.dcc_mle_loss`).

        Returns the weighted scalar losses "loss_cls", "loss_bbox", "loss_oks", "loss_vis",
        "loss_mle" and, in stage 3, "loss_bbox_aux"; their sum is the training objective. The
        head computes what training needs whatever the module mode; BatchNorm follows the mode
        (in training, the DCC's takes its running statistics when the batch has a single
        positive, where mmpose fails: `DCC._project_pose`).
        """
        # Imported here: rtmo.train builds on rtmo.model's modules, which import this file.
        from rtmo.train.objective import rtmo_losses
        from rtmo.train.targets import check_targets

        _check_images(images)
        train_stage = self.config.train_stage(stage)
        truth = check_targets(targets, images, self.config.num_keypoints)
        if self.head.dcc.query_weight is not None:
            raise RuntimeError("a reparameterize()d model cannot be trained: load it again")
        outputs = self.head.forward_train(self.neck(self.backbone(images)))
        return rtmo_losses(outputs, truth, self.head.dcc, train_stage, self.config, backend)

    @torch.no_grad()
    def predict_padded(
        self,
        images: Tensor,
        score_thr: float = 0.1,
        nms_thr: float = 0.65,
        max_det: int = 100,
        backend: str = "auto",
    ) -> PaddedPredictions:
        """The whole prediction in static shapes (no host sync; compile/CUDA-graph friendly)."""
        _check_images(images)
        _check_thresholds(score_thr, nms_thr, max_det)
        dense = self(images)
        size = (images.shape[-1], images.shape[-2])
        return postprocess_padded(
            dense, self.head.dcc, size, score_thr, nms_thr, max_det, self.use_kernels, backend
        )

    @torch.no_grad()
    def predict(
        self,
        images: Tensor,
        score_thr: float = 0.1,
        nms_thr: float = 0.65,
        max_det: int = 100,
        backend: str = "auto",
    ) -> list[dict[str, Tensor]]:
        """Detections per image: dicts with "boxes" (n, 4) xyxy, "scores" (n,), "keypoints"
        (n, K, 2), "keypoint_scores" (n, K) in model-input pixels, by descending score.

        images (B, 3, H, W) float BGR 0..255 (no normalisation), H and W multiples of 32.
        A box is dropped when its IoU with a higher-scoring kept box is > nms_thr.
        """
        return split_predictions(self.predict_padded(images, score_thr, nms_thr, max_det, backend))

    @torch.no_grad()
    def reparameterize(self) -> RTMOModel:
        """Inference form: RepVGG branches fused, every BatchNorm folded into its conv/Linear,
        the DCC's x_fc/y_fc folded into the query weights. Eval mode only; idempotent."""
        if self.training:
            raise RuntimeError("reparameterize() needs eval mode: call model.eval() first")
        for m in self.modules():
            if isinstance(m, RepVGGBlock):
                m.reparameterize()
        fuse_conv_bn_modules(self)
        self.head.dcc.reparameterize()
        return self


def _check_images(images: object) -> None:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"images must be float (BGR 0..255), got {images.dtype}")
    h, w = images.shape[-2:]
    if h % 32 or w % 32 or h == 0 or w == 0:
        raise ValueError(f"images height and width must be positive multiples of 32, got {h}x{w}")


def _check_thresholds(score_thr: float, nms_thr: float, max_det: int) -> None:
    if not 0.0 <= score_thr < 1.0:
        raise ValueError(f"score_thr must be in [0, 1), got {score_thr}")
    if not 0.0 < nms_thr <= 1.0:
        raise ValueError(f"nms_thr must be in (0, 1], got {nms_thr}")
    if max_det < 1:
        raise ValueError(f"max_det must be at least 1, got {max_det}")
