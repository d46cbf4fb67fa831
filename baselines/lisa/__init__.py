"""LISA (Lai et al., CVPR 2024) rebuilt from transformers parts, as a rival to GenMask.

- `sam`: a tiny SAM (`transformers.SamModel`) and its point-prompted pretraining here (`bench train --model sam-tiny`),
  SAM's preprocessing (longest side, pixel mean/std, bottom-right padding) and mask post-processing.
- `model`: LISA's architecture: a VLM whose `[SEG]` hidden state goes through `text_hidden_fcs` into SAM's prompt
  encoder as the single sparse prompt, SAM's mask decoder over the frozen SAM image encoder; LISA's losses.
- `keymap`: real LISA-7B checkpoints (LLaVA + SAM ViT-H) mapped onto transformers' `LlavaForConditionalGeneration`
  and `SamModel`.
- `train`: `bench train --model lisa` on the stream every rival shares (`baselines.common`).
- `adapter`: the harness model `lisa`.
"""
