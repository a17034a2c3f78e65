// llama_dump: run llama.cpp on given token ids and write every intermediate tensor of the graph,
// whole, as float32, to one file (llama-eval-callback prints only 3 values per edge).
//
//   llama_dump MODEL.gguf OUT.bin ID,ID,ID... [NAME_REGEX]
//
// NAME_REGEX (ECMAScript, whole name): write only the tensors whose name matches.
// File: records of [u32 name length][name][u32 n_dims = 4][i64 ne[4]][f32 data, ne0 fastest].
// Every token's logits are requested, so `result_output` holds all rows. minigemma/verify/
// llama_cpp.py reads the file and maps llama.cpp's names (`Qcur_normed-3`) to minigemma's.
#include "ggml.h"
#include "ggml-backend.h"
#include "llama.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <regex>
#include <string>
#include <vector>

struct dump { FILE * f; std::vector<uint8_t> buf; bool filtered; std::regex names; };

static float value(const uint8_t * p, ggml_type type) {
    switch (type) {
        case GGML_TYPE_F32: return *(const float *) p;
        case GGML_TYPE_F16: return ggml_fp16_to_fp32(*(const ggml_fp16_t *) p);
        case GGML_TYPE_BF16: return ggml_bf16_to_fp32(*(const ggml_bf16_t *) p);
        case GGML_TYPE_I32: return (float) *(const int32_t *) p;
        default: return 0.0f;
    }
}

static bool on_tensor(struct ggml_tensor * t, bool ask, void * user) {
    if (ask) return true;
    if (t->type != GGML_TYPE_F32 && t->type != GGML_TYPE_F16 && t->type != GGML_TYPE_BF16 && t->type != GGML_TYPE_I32) return true;
    auto * d = (dump *) user;
    if (d->filtered && !std::regex_match(t->name, d->names)) return true;
    const uint8_t * data = (const uint8_t *) t->data;
    if (!ggml_backend_buffer_is_host(t->buffer)) {
        d->buf.resize(ggml_nbytes(t));
        ggml_backend_tensor_get(t, d->buf.data(), 0, ggml_nbytes(t));
        data = d->buf.data();
    }
    const uint32_t len = (uint32_t) strlen(t->name), dims = 4;
    fwrite(&len, 4, 1, d->f);
    fwrite(t->name, 1, len, d->f);
    fwrite(&dims, 4, 1, d->f);
    fwrite(t->ne, 8, 4, d->f);
    for (int64_t i3 = 0; i3 < t->ne[3]; i3++)
        for (int64_t i2 = 0; i2 < t->ne[2]; i2++)
            for (int64_t i1 = 0; i1 < t->ne[1]; i1++)
                for (int64_t i0 = 0; i0 < t->ne[0]; i0++) {
                    const float v = value(data + i3 * t->nb[3] + i2 * t->nb[2] + i1 * t->nb[1] + i0 * t->nb[0], t->type);
                    fwrite(&v, 4, 1, d->f);
                }
    return true;
}

int main(int argc, char ** argv) {
    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: %s MODEL.gguf OUT.bin ID,ID,... [NAME_REGEX]\n", argv[0]);
        return 2;
    }
    std::vector<llama_token> ids;
    for (char * p = argv[3]; *p;) {
        ids.push_back((llama_token) strtol(p, &p, 10));
        if (*p == ',') p++;
    }
    dump d{fopen(argv[2], "wb"), {}, argc == 5, std::regex(argc == 5 ? argv[4] : "")};
    if (!d.f) { fprintf(stderr, "llama_dump: cannot write %s\n", argv[2]); return 2; }
    llama_backend_init();
    llama_model * model = llama_model_load_from_file(argv[1], llama_model_default_params());
    if (!model) { fprintf(stderr, "llama_dump: cannot load %s\n", argv[1]); return 2; }
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = cp.n_batch = cp.n_ubatch = (uint32_t) ids.size() < 64 ? 64 : (uint32_t) ids.size();
    cp.cb_eval = on_tensor;
    cp.cb_eval_user_data = &d;
    cp.n_threads = cp.n_threads_batch = 1;
    cp.type_k = cp.type_v = GGML_TYPE_F32;  // the default f16 cache would round keys and values
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;  // its CPU kernel rounds to f16 too
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) { fprintf(stderr, "llama_dump: cannot make a context\n"); return 2; }
    llama_batch batch = llama_batch_init((int32_t) ids.size(), 0, 1);
    for (size_t i = 0; i < ids.size(); i++) {
        batch.token[i] = ids[i];
        batch.pos[i] = (llama_pos) i;
        batch.n_seq_id[i] = 1;
        batch.seq_id[i][0] = 0;
        batch.logits[i] = 1;  // every row of the logits, as a trace has them
    }
    batch.n_tokens = (int32_t) ids.size();
    const int rc = llama_decode(ctx, batch);
    fclose(d.f);
    llama_batch_free(batch);
    llama_free(ctx);
    llama_model_free(model);
    if (rc != 0) { fprintf(stderr, "llama_dump: llama_decode returned %d\n", rc); return 1; }
    return 0;
}
