from .ris_encoder_decoder import RISEncoderDecoder, stack_text_inputs

__all__ = ['RISEncoderDecoder', 'stack_text_inputs']
