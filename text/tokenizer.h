/* tokenizer.h: CLIP's byte-level BPE tokenizer, identical ids to openai/CLIP simple_tokenizer and
 * open_clip's tokenize(): clean (html-unescape twice, whitespace folded, strip, lowercase), split with
 * CLIP's pattern, BPE each piece, wrap in <start_of_text>=49406 ... <end_of_text>=49407, zero-pad to
 * the context length, and truncate keeping the last id as 49407 (open_clip behaviour).
 * The merges file (bpe_simple_vocab_16e6.txt.gz, MIT, (c) OpenAI) is embedded in the library. */
#ifndef TACA_TEXT_TOKENIZER_H
#define TACA_TEXT_TOKENIZER_H

#include <stdint.h>

#include "base/error.h"

#define CLIP_CONTEXT_LEN 77
#define CLIP_VOCAB_SIZE 49408
#define CLIP_SOT_ID 49406
#define CLIP_EOT_ID 49407

typedef struct clip_tokenizer clip_tokenizer;

/* path NULL: the embedded vocabulary. Otherwise a bpe_simple_vocab_16e6.txt(.gz) merges file. */
clip_tokenizer *clip_tokenizer_load(const char *path, taca_error *err);
void clip_tokenizer_free(clip_tokenizer *tok);

/* Tokenizes one UTF-8 caption into out[context_len]. Invalid UTF-8 is an error. Thread-safe for
 * concurrent calls on the same tokenizer. */
int clip_tokenize(const clip_tokenizer *tok, const char *text, int32_t *out, int context_len,
                  taca_error *err);

#endif
