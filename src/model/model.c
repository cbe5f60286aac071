/* ds4 — model loading and its summary (see model.h). */
#include "model/model.h"

#include <stdlib.h>
#include <string.h>

#include "gguf/quant.h"

ds4_model *ds4_model_open(const char *path, int flags, ds4_err *err) {
    ds4_model *m = calloc(1, sizeof(*m));
    if (!m) {
        ds4_errf(err, "out of memory");
        return NULL;
    }
    m->file = gguf_open(path, err);
    if (!m->file) goto fail;
    if (ds4_hparams_from_gguf(m->file, &m->hp, err) != 0) goto fail_prefix;
    if (ds4_weights_bind(m->file, &m->hp, &m->w, err) != 0) goto fail_prefix;
    if (!(flags & DS4_MODEL_NO_DATA_CHECKS) && ds4_weights_check_data(&m->w, &m->hp, err) != 0) goto fail_prefix;
    return m;
fail_prefix:
    ds4_err_prefix(err, "%s", path);
fail:
    ds4_model_close(m);
    return NULL;
}

void ds4_model_close(ds4_model *m) {
    if (!m) return;
    if (m->backend_release) m->backend_release(m);
    ds4_weights_free(&m->w);
    gguf_close(m->file);
    free(m);
}

typedef struct type_count {
    uint64_t n[64];
    uint64_t bytes[64];
} type_count;

static void count_type(void *ctx, ds4_tensor *t) {
    type_count *c = ctx;
    if (t->type >= 0 && t->type < 64) {
        c->n[t->type]++;
        c->bytes[t->type] += t->size;
    }
}

void ds4_model_print_summary(const ds4_model *m, FILE *out) {
    const ds4_hparams *hp = &m->hp;
    int n_win = 0, n_csa = 0, n_hca = 0;
    for (int il = 0; il < hp->n_layer; il++) {
        switch (ds4_layer_kind(hp, il)) {
        case DS4_ATTN_WINDOW: n_win++; break;
        case DS4_ATTN_CSA: n_csa++; break;
        case DS4_ATTN_HCA: n_hca++; break;
        }
    }
    fprintf(out, "model:        %s\n", m->file->path);
    fprintf(out, "file size:    %llu bytes (%.2f GiB), %llu tensors, %llu metadata keys\n",
            (unsigned long long)m->file->file_size, (double)m->file->file_size / (1024.0 * 1024 * 1024),
            (unsigned long long)m->file->n_tensors, (unsigned long long)m->file->n_kv);
    fprintf(out, "shape:        %d layers x %d, vocab %d, %d heads x %d (rope %d), q_lora %d, out %d groups x %d\n",
            hp->n_layer, hp->n_embd, hp->n_vocab, hp->n_head, hp->head_dim, hp->rope_dim, hp->q_lora, hp->o_groups,
            hp->o_lora);
    fprintf(out, "experts:      %d routed (%d used) + 1 shared, ff %d, %d hash-routed layers, scale %.3g\n", hp->n_expert,
            hp->n_expert_used, hp->n_ff, hp->n_hash_layers, hp->expert_scale);
    fprintf(out, "attention:    window %d; %d window-only, %d CSA (ratio 4, indexer %d heads x %d, top-%d), %d HCA layers\n",
            hp->window, n_win, n_csa, hp->idx_heads, hp->idx_dim, hp->idx_topk, n_hca);
    fprintf(out, "schedule:     ");
    for (int il = 0; il < hp->n_layer; il++) fprintf(out, "%s%d", il ? "," : "", hp->ratio[il]);
    fprintf(out, "\n");
    fprintf(out, "hyper-conn:   %d streams, %d Sinkhorn iterations\n", hp->n_hc, hp->sinkhorn_iters);
    fprintf(out, "rope:         base %g (window layers), %g + YaRN x%g (orig %llu, beta %g/%g) (compressed layers)\n",
            hp->rope_base, hp->compress_rope_base, hp->yarn_factor, (unsigned long long)hp->yarn_orig_ctx,
            hp->yarn_beta_fast, hp->yarn_beta_slow);
    type_count c;
    memset(&c, 0, sizeof(c));
    ds4_weights_visit((ds4_weights *)&m->w, count_type, &c);
    fprintf(out, "tensor types:");
    for (int t = 0; t < 64; t++)
        if (c.n[t])
            fprintf(out, " %s x%llu (%.2f GiB)", ds4_type_name(t), (unsigned long long)c.n[t],
                    (double)c.bytes[t] / (1024.0 * 1024 * 1024));
    fprintf(out, "\n");
    const ds4_layer_weights *L0 = &m->w.layers[0];
    fprintf(out, "experts type: gate/up %s, down %s (layer 0)\n", ds4_type_name(L0->gate_exps.type),
            ds4_type_name(L0->down_exps.type));
    fprintf(out, "parameters:   %.3f B (%llu), tensor data %.2f GiB\n", (double)m->w.n_params / 1e9,
            (unsigned long long)m->w.n_params, (double)m->w.n_bytes / (1024.0 * 1024 * 1024));
    fprintf(out, "layout:       %s\n",
            ds4_hparams_is_published(hp)
                ? (m->w.published_types ? "published DeepSeek V4 Flash shape, ds4 tensor types"
                                        : "published DeepSeek V4 Flash shape, non-standard tensor types")
                : "custom shape (synthetic or test model)");
}
