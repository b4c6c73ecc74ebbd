"""Nodes of the sampling stage: the sampler (text/image-to-video, SDEdit) and FlowEdit."""
from __future__ import annotations

from ._base import validate_numbers, videodit_node

_SEED = {"default": 0, "min": 0, "max": 0xFFFF_FFFF_FFFF_FFFF, "control_after_generate": True,
         "tooltip": "Noise seed. The noise is drawn on the CPU, so a seed gives the same clip on "
                    "every GPU type."}
_STEPS = {"default": 30, "min": 1, "max": 200,
          "tooltip": "Denoising steps. 20-50 for base models; 4-8 with a step-distilled model "
                     "(sampler flow_distilled, cfg 1)."}
_SHIFT = {"default": 5.0, "min": 0.1, "max": 30.0, "step": 0.1,
          "tooltip": "Time shift of the schedule: higher spends more steps at high noise "
                     "(composition). Wan: 3 for 480p, 5 for 720p; the 5B model uses 5."}


def _solvers():
    from ..samplers.solvers import SOLVER_NAMES
    return list(SOLVER_NAMES)


@videodit_node("VideoDiTSampler", "VideoDiT Sampler", "sampling")
class VideoDiTSampler:
    DESCRIPTION = ("Denoises a video latent with a Wan model: text-to-video from an empty latent, "
                   "image-to-video after VideoDiT Image To Video, or a video edit (SDEdit) from an "
                   "encoded clip with denoise below 1. Wan 2.2 A14B: connect the low-noise expert "
                   "too; steps above the boundary use the high-noise one.")
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The denoised latent (raw VAE space, ready for VAE Decode).",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("VIDEODIT_MODEL", {"tooltip": "From VideoDiT Model Loader (for Wan 2.2 "
                                                        "A14B: the high-noise expert)."}),
                "conditioning": ("VIDEODIT_CONDITIONING", {
                    "tooltip": "From VideoDiT Text Encode, or VideoDiT Image To Video."}),
                "latent": ("LATENT", {"tooltip": "Empty latent (generation) or an encoded clip "
                                                 "(edit, with denoise < 1)."}),
                "seed": ("INT", dict(_SEED)),
                "steps": ("INT", dict(_STEPS)),
                "cfg": ("FLOAT", {"default": 5.0, "min": 1.0, "max": 30.0, "step": 0.1,
                                  "tooltip": "Guidance toward the positive and away from the "
                                             "negative prompt. 1 skips the negative pass (twice "
                                             "as fast; for distilled models)."}),
                "shift": ("FLOAT", dict(_SHIFT)),
                "sampler": (_solvers(), {"default": "unipc",
                                         "tooltip": "unipc: Wan's default, accurate in few steps. "
                                                    "euler: simplest. dpmpp_2m: second-order "
                                                    "multistep. flow_distilled: for step-distilled "
                                                    "models (cfg 1, 4-8 steps)."}),
                "denoise": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 1.0, "step": 0.01,
                                      "tooltip": "1: generate from noise. Below 1: edit the input "
                                                 "latent (SDEdit); like ComfyUI, a fraction of a "
                                                 "longer schedule, so with shift 5 denoise 0.5 "
                                                 "starts at noise level 0.83."}),
            },
            "optional": {
                "model_low_noise": ("VIDEODIT_MODEL", {
                    "tooltip": "Wan 2.2 A14B low-noise expert; takes over below the boundary."}),
                "boundary": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.005,
                                       "tooltip": "Noise level where the low-noise expert takes "
                                                  "over. 0 = Wan's defaults: 0.875 text-to-video, "
                                                  "0.9 image-to-video."}),
                "cfg_low_noise": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 30.0, "step": 0.1,
                                            "tooltip": "cfg for the low-noise expert (Wan 2.2 "
                                                       "A14B). 0 = the same as cfg."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, cfg, shift, denoise, boundary=None, cfg_low_noise=None):
        return validate_numbers(cls, cfg=cfg, shift=shift, denoise=denoise, boundary=boundary,
                                cfg_low_noise=cfg_low_noise)

    def sample(self, model, conditioning, latent, seed, steps, cfg, shift, sampler, denoise,
               model_low_noise=None, boundary=0.0, cfg_low_noise=0.0):
        from ..runtime.hooks import host_hooks
        from ..samplers.denoise import SamplingSettings, sample_video
        from .memory import plan_before_sampling

        plan = plan_before_sampling(model, latent, cfg, model_low_noise=model_low_noise,
                                    cfg_low_noise=cfg_low_noise or None)
        settings = SamplingSettings(seed=seed, steps=steps, cfg=cfg, shift=shift, sampler=sampler,
                                    denoise=denoise, boundary=boundary or None,
                                    cfg_low_noise=cfg_low_noise or None,
                                    batch_cfg=plan.batch_cfg if plan is not None else None)
        return (sample_video(model, conditioning, latent, settings,
                             model_low_noise=model_low_noise, hooks=host_hooks()),)


@videodit_node("VideoDiTFlowEditSampler", "VideoDiT FlowEdit Sampler", "sampling")
class VideoDiTFlowEditSampler:
    DESCRIPTION = ("Edits a clip toward a target prompt without inversion (FlowEdit). Keeps the "
                   "source's layout and motion better than SDEdit at the same strength. Costs "
                   "two model passes per step (four with cfg).")
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The edited latent (raw VAE space, ready for VAE Decode).",)
    FUNCTION = "edit"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("VIDEODIT_MODEL", {"tooltip": "A text-to-video Wan model."}),
            "source_conditioning": ("VIDEODIT_CONDITIONING", {
                "tooltip": "Text encode of a prompt describing the source clip."}),
            "target_conditioning": ("VIDEODIT_CONDITIONING", {
                "tooltip": "Text encode of the same description with the change you want."}),
            "source_latent": ("LATENT", {"tooltip": "The source clip from VideoDiT VAE Encode."}),
            "seed": ("INT", dict(_SEED)),
            "steps": ("INT", {**_STEPS, "default": 30}),
            "source_cfg": ("FLOAT", {"default": 3.0, "min": 1.0, "max": 30.0, "step": 0.1,
                                     "tooltip": "Guidance for the source prompt's velocity."}),
            "target_cfg": ("FLOAT", {"default": 6.0, "min": 1.0, "max": 30.0, "step": 0.1,
                                     "tooltip": "Guidance for the target prompt's velocity; "
                                                "higher makes the edit stronger."}),
            "shift": ("FLOAT", dict(_SHIFT)),
            "skip_steps": ("INT", {"default": 8, "min": 0, "max": 199,
                                   "tooltip": "Noisiest steps left out. More: a subtler edit "
                                              "closer to the source; fewer: a stronger edit."}),
            "refine_steps": ("INT", {"default": 0, "min": 0, "max": 199,
                                     "tooltip": "Last steps sampled normally from the edit "
                                                "(adds detail, loosens faithfulness). 0 is usual."}),
            "n_avg": ("INT", {"default": 1, "min": 1, "max": 8,
                              "tooltip": "Noise draws averaged per step: smoother edits, "
                                         "proportionally slower."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, source_cfg, target_cfg, shift):
        return validate_numbers(cls, source_cfg=source_cfg, target_cfg=target_cfg, shift=shift)

    def edit(self, model, source_conditioning, target_conditioning, source_latent, seed, steps,
             source_cfg, target_cfg, shift, skip_steps, refine_steps, n_avg):
        from ..runtime.hooks import host_hooks
        from ..samplers.denoise import flowedit_video
        from .memory import plan_before_sampling

        plan_before_sampling(model, source_latent, max(source_cfg, target_cfg))
        return (flowedit_video(model, source_conditioning, target_conditioning, source_latent,
                               seed=seed, steps=steps, source_cfg=source_cfg,
                               target_cfg=target_cfg, shift=shift, skip_steps=skip_steps,
                               refine_steps=refine_steps, n_avg=n_avg, hooks=host_hooks()),)


NODE_CLASSES: list[type] = [VideoDiTSampler, VideoDiTFlowEditSampler]
