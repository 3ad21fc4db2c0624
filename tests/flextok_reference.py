"""An official-style FlexTok hydra config (as data), written from ml-flextok's module definitions
and the module order of its released models, for the converter tests and the local parity check.

`official_config(...)` returns what an official config.json holds under "config": every part a
dict with a `_target_` class path and that class's arguments. Only the parts the zoo reads, plus
what the official code needs to build the same model, are filled in.
"""
from __future__ import annotations

P = "flextok.model"


def _op(fn: str) -> dict:
    return {"_target_": f"{P}.utils.dict_ops.{fn}", "_partial_": True}


def official_config(enc_dim: int = 768, enc_depth: int = 12, dec_dim: int = 768, dec_depth: int = 12,
                    num_registers: int = 256, grid: int = 16, latent_channels: int = 16, levels=(8, 8, 8, 5, 5, 5),
                    scaling_factor: float | None = 0.88, null: str = "LearnedNullCond", mask_mode: str = "causal_last",
                    adaln_expansion: int = 2, patch_posemb: str = "sincos", head_dim: int = 64,
                    max_timestep: float = 1.0) -> dict:
    """The hydra config of a FlexTok with these sizes (the released d12-d12 by default)."""
    encoder = {
        "enc_channels_to_last": {"_target_": f"{P}.utils.dict_ops.PerSampleOp", "read_key": "vae_latents",
                                 "write_key": "vae_latents_bhwc", "per_sample_op": _op("channels_first_to_last")},
        "enc_patch_emb": {"_target_": f"{P}.preprocessors.patching.PatchEmbedder",
                          "input_tensor_list_read_key": "vae_latents_bhwc", "patches_list_write_key": "enc_patches",
                          "n_patches_write_key": "enc_n_patches", "channels_in": latent_channels, "dim": enc_dim,
                          "patch_sizes": [2, 2], "flatten_patches": False},
        "enc_posemb_module": {"_target_": f"{P}.utils.posembs.PositionalEmbeddingAdder", "read_key": "enc_patches",
                              "write_key": "enc_patches", "dim": enc_dim, "max_sizes": [grid, grid],
                              "posemb_type": patch_posemb, "posemb_scaling": "absolute"},
        "enc_register_module": {"_target_": f"{P}.preprocessors.registers.Registers1D",
                                "input_tensor_list_read_key": "enc_patches", "register_sizes_read_write_key": "register_sizes",
                                "registers_write_key": "enc_registers", "dim": enc_dim, "n_min": num_registers,
                                "n_max": num_registers, "size_sampling_mode": "uniform", "ordering_mode": "nested"},
        "enc_seq_packer": {"_target_": f"{P}.preprocessors.flex_seq_packing.BlockWiseSequencePacker",
                           "input_list_read_keys": ["enc_patches", "enc_registers"], "packed_seq_write_key": "enc_packed_seq",
                           "block_mask_write_key": "enc_block_mask", "inner_packed_shapes_write_key": "enc_ps_inner",
                           "outer_packed_shapes_write_key": "enc_ps_outer", "mask_mode": mask_mode, "pad_to_multiple": 128},
        "enc_transformer": {"_target_": f"{P}.trunks.transformers.FlexTransformer", "input_seq_read_key": "enc_packed_seq",
                            "output_seq_write_key": "enc_packed_seq", "dim": enc_dim, "depth": enc_depth,
                            "head_dim": head_dim, "block_mask_read_key": "enc_block_mask"},
        "enc_unpacker": {"_target_": f"{P}.postprocessors.seq_unpacking.SequenceUnpacker",
                         "packed_seq_read_key": "enc_packed_seq", "inner_seq_write_keys": ["enc_patches", "enc_registers"],
                         "inner_packed_shapes_read_key": "enc_ps_inner", "outer_packed_shapes_read_key": "enc_ps_outer"},
        "enc_to_latents": {"_target_": f"{P}.postprocessors.heads.LinearHead", "read_key": "enc_registers",
                           "write_key": "enc_registers", "dim": enc_dim, "dim_out": len(levels),
                           "use_mup_readout": False, "weight_init_style": "zero"},
    }
    decoder = {
        "dec_from_latents": {"_target_": f"{P}.preprocessors.linear.LinearLayer", "read_key": "quants",
                             "write_key": "dec_quants", "dim_in": len(levels), "dim": dec_dim},
        "dec_registers_posemb_module": {"_target_": f"{P}.utils.posembs.PositionalEmbeddingAdder", "read_key": "dec_quants",
                                        "write_key": "dec_quants", "dim": dec_dim, "max_sizes": [num_registers],
                                        "posemb_type": "learnable_sum", "posemb_scaling": "absolute"},
        "dec_nested_dropout": {"_target_": f"{P}.preprocessors.token_dropout.MaskedNestedDropout",
                               "read_write_key": "dec_quants", "dim": dec_dim, "eval_keep_k_read_key": "eval_keep_k",
                               "train_keep_k_write_key": "train_keep_k", "size_sampling_mode": "uniform"},
        "dec_latent_dropout": {"_target_": f"{P}.preprocessors.nullcond.{null}", "read_write_key": "dec_quants",
                               "eval_drop_flag_read_key": "eval_dropout_mask", "dropout_prob": 0.2,
                               **({"dim": dec_dim} if null == "LearnedNullCond" else {})},
        "dec_noise_channels_to_last": {"_target_": f"{P}.utils.dict_ops.PerSampleOp", "read_key": "vae_latents_noised",
                                       "write_key": "dec_noised_bhwc", "per_sample_op": _op("channels_first_to_last")},
        "dec_noise_patch_emb": {"_target_": f"{P}.preprocessors.patching.PatchEmbedder",
                                "input_tensor_list_read_key": "dec_noised_bhwc", "patches_list_write_key": "dec_patches",
                                "n_patches_write_key": "dec_n_patches", "channels_in": latent_channels, "dim": dec_dim,
                                "patch_sizes": [2, 2], "flatten_patches": False},
        "dec_patches_posemb_module": {"_target_": f"{P}.utils.posembs.PositionalEmbeddingAdder", "read_key": "dec_patches",
                                      "write_key": "dec_patches", "dim": dec_dim, "max_sizes": [grid, grid],
                                      "posemb_type": patch_posemb, "posemb_scaling": "absolute"},
        "dec_seq_packer": {"_target_": f"{P}.preprocessors.flex_seq_packing.BlockWiseSequencePacker",
                           "input_list_read_keys": ["dec_patches", "dec_quants"], "packed_seq_write_key": "dec_packed_seq",
                           "block_mask_write_key": "dec_block_mask", "inner_packed_shapes_write_key": "dec_ps_inner",
                           "outer_packed_shapes_write_key": "dec_ps_outer", "mask_mode": "full", "pad_to_multiple": 128,
                           "emb_packing_fn_write_key": "dec_emb_packing_fn", "per_subseq_embs": adaln_expansion > 1},
        "dec_time_embedder": {"_target_": f"{P}.preprocessors.time_embedding.TimestepEmbedder",
                              "timesteps_read_key": "timesteps", "time_embedding_write_key": "dec_temb", "dim": dec_dim,
                              "frequency_embedding_size": 256, "max_timestep": max_timestep},
        "dec_transformer": {"_target_": f"{P}.trunks.transformers.FlexTransformer", "input_seq_read_key": "dec_packed_seq",
                            "output_seq_write_key": "dec_packed_seq", "dim": dec_dim, "depth": dec_depth,
                            "head_dim": head_dim, "block_mask_read_key": "dec_block_mask", "adaLN_emb_read_key": "dec_temb",
                            "adaLN_packing_fn_read_key": "dec_emb_packing_fn", "adaLN_expansion": adaln_expansion},
        "dec_unpacker": {"_target_": f"{P}.postprocessors.seq_unpacking.SequenceUnpacker",
                         "packed_seq_read_key": "dec_packed_seq", "inner_seq_write_keys": ["dec_patches", "dec_quants"],
                         "inner_packed_shapes_read_key": "dec_ps_inner", "outer_packed_shapes_read_key": "dec_ps_outer"},
        "dec_to_patches": {"_target_": f"{P}.postprocessors.heads.ToPatchesLinearHead", "read_key": "dec_patches",
                           "write_key": "vae_latents_reconst_bhwc", "dim": dec_dim, "channels_out": latent_channels,
                           "patch_sizes": [2, 2], "use_mup_readout": False, "weight_init_style": "zero",
                           "adaLN_emb_read_key": "dec_temb"},
        "dec_channels_to_first": {"_target_": f"{P}.utils.dict_ops.PerSampleOp", "read_key": "vae_latents_reconst_bhwc",
                                  "write_key": "vae_latents_reconst", "per_sample_op": _op("channels_last_to_first")},
    }
    wrapper = "flextok.model.utils.wrappers.SequentialModuleDictWrapper"
    return {
        "_target_": "flextok.flextok_wrapper.FlexTok",
        "vae": {"_target_": "flextok.vae_wrapper.StableDiffusionVAE", "images_read_key": "rgb",
                "vae_latents_read_key": "vae_latents_reconst", "vae_latents_write_key": "vae_latents",
                "images_reconst_write_key": "rgb_reconst", "vae_kl_loss_write_key": "kl_loss",
                "latent_channels": latent_channels, "scaling_factor": scaling_factor, "sample_posterior": False,
                "hf_hub_path": None if scaling_factor is not None else f"EPFL-VILAB/flextok_vae_c{latent_channels}"},
        "encoder": {"_target_": wrapper, "module_dict": encoder},
        "regularizer": {"_target_": "flextok.regularizers.quantize_fsq.FSQ", "latents_read_key": "enc_registers",
                        "quants_write_key": "quants", "tokens_write_key": "tokens", "levels": list(levels)},
        "decoder": {"_target_": wrapper, "module_dict": decoder},
        "flow_matching_noise_module": {"_target_": "flextok.flow_matching.noise_modules.MinRFNoiseModule",
                                       "clean_images_read_key": "vae_latents", "noised_images_write_key": "vae_latents_noised",
                                       "timesteps_write_key": "timesteps", "sigmas_write_key": "sigmas"},
        "pipeline": {"_target_": "flextok.flow_matching.pipelines.MinRFPipeline", "_partial_": True,
                     "latents_read_key": "quants", "timesteps_read_key": "timesteps",
                     "noised_images_read_key": "vae_latents_noised", "reconst_write_key": "vae_latents_reconst",
                     "out_channels": latent_channels},
    }
