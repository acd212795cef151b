"""Names shared by the node modules: custom ComfyUI types and the category root."""

GENERATOR = "SGS_GENERATOR"  # a core.Generator (never modified by nodes)
LATENT = "SGS_LATENT"        # a core.Latent (space, tensor, generator identity)
CATEGORY_ROOT = "StyleGAN"
WEIGHT_DELTA = "SGS_WEIGHT_DELTA"  # a core.deltas.WeightDelta (tuned - base weights), or None
ALIGN_TRANSFORM = "SGS_ALIGN_TRANSFORM"  # list of core.align.AlignTransform, one per aligned image
CLIP = "SGS_CLIP"            # a core.models.clip.ClipModel (shared and cached: never modified)
ARCFACE = "SGS_ARCFACE"      # a core.losses.arcface.ArcFaceIRSE50 (shared and cached: never modified)
DIRECTIONS = "SGS_GLOBAL_DIRECTIONS"  # a core.edits.global_directions.GlobalDirections (cached: never modified)
MAPPER = "SGS_LATENT_MAPPER"     # a core.edits.latent_mapper.LatentMapper (eval mode, cached: never modified)
WEIGHT_SHIFT = "SGS_WEIGHT_SHIFT"  # a core.edits.weight_shift.WeightShift (x per parameter, tied to its base generator)
FACE_PARSER = "SGS_FACE_PARSER"    # a core.models.face_parsing.FaceParser (shared and cached: never modified)
FACE_PARSING = "SGS_FACE_PARSING"  # a core.models.face_parsing.FaceParsing (uint8 labels [N, H, W] + label schema)
ENCODER = "SGS_ENCODER"        # a core.models.encoders.Encoder (pSp / e4e / ReStyle; cached: never modified)
LATENT_DIRECTIONS = "SGS_DIRECTIONS"  # a core.directions.Directions (SeFa, GANSpace, InterFaceGAN, imported; never modified)
