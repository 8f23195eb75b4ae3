// ann_faiss.cpp: the C interface to faiss declared in ann_faiss.h (see there).
#include "search/ann_faiss.h"

#include <faiss/IndexHNSW.h>
#include <faiss/IndexIDMap.h>
#include <faiss/IndexIVF.h>
#include <faiss/impl/FaissException.h>
#include <faiss/index_factory.h>
#include <faiss/index_io.h>

#include <exception>
#include <memory>

struct ann_faiss {
  std::unique_ptr<faiss::Index> index;
};

namespace {

// The IVF layer of an index (possibly under an IDMap), or nullptr.
const faiss::IndexIVF *ivf_of(const faiss::Index *ix) {
  if (auto m = dynamic_cast<const faiss::IndexIDMap *>(ix)) ix = m->index;
  return dynamic_cast<const faiss::IndexIVF *>(ix);
}
const faiss::IndexHNSW *hnsw_of(const faiss::Index *ix) {
  if (auto m = dynamic_cast<const faiss::IndexIDMap *>(ix)) ix = m->index;
  return dynamic_cast<const faiss::IndexHNSW *>(ix);
}

template <typename F>
int guard(taca_error *err, const char *what, F f) {
  try {
    f();
    return 0;
  } catch (const faiss::FaissException &e) {
    return taca_fail(err, "faiss %s: %s", what, e.msg.c_str());
  } catch (const std::exception &e) {
    return taca_fail(err, "faiss %s: %s", what, e.what());
  } catch (...) {
    return taca_fail(err, "faiss %s: unknown error", what);
  }
}

}  // namespace

extern "C" {

int ann_faiss_create(ann_faiss **out, const char *factory, int dim, int inner_product, taca_error *err) {
  *out = nullptr;
  return guard(err, "index_factory", [&] {
    auto ix = std::make_unique<ann_faiss>();
    ix->index.reset(faiss::index_factory(dim, factory, inner_product ? faiss::METRIC_INNER_PRODUCT : faiss::METRIC_L2));
    *out = ix.release();
  });
}

int ann_faiss_train(ann_faiss *ix, int64_t n, const float *x, taca_error *err) {
  return guard(err, "train", [&] { ix->index->train(n, x); });
}

int ann_faiss_add(ann_faiss *ix, int64_t n, const float *x, const int64_t *ids, taca_error *err) {
  return guard(err, "add", [&] { ix->index->add_with_ids(n, x, ids); });
}

int ann_faiss_write(const ann_faiss *ix, const char *path, taca_error *err) {
  return guard(err, "write_index", [&] { faiss::write_index(ix->index.get(), path); });
}

int ann_faiss_read(ann_faiss **out, const char *path, int mmap, int *mapped, taca_error *err) {
  *out = nullptr;
  *mapped = 0;
  auto ix = std::make_unique<ann_faiss>();
  if (mmap) {
    try {
      ix->index.reset(faiss::read_index(path, faiss::IO_FLAG_MMAP | faiss::IO_FLAG_READ_ONLY));
      *mapped = 1;
      *out = ix.release();
      return 0;
    } catch (...) {
      // not mappable (e.g. HNSW): read it instead
    }
  }
  return guard(err, "read_index", [&] {
    ix->index.reset(faiss::read_index(path, faiss::IO_FLAG_READ_ONLY));
    *out = ix.release();
  });
}

int ann_faiss_search(const ann_faiss *ix, int64_t nq, const float *q, int64_t k, int nprobe, float *dist,
                     int64_t *labels, taca_error *err) {
  return guard(err, "search", [&] {
    const faiss::Index *base = ix->index.get();
    if (const faiss::IndexIVF *ivf = ivf_of(base)) {
      faiss::SearchParametersIVF p;
      p.nprobe = nprobe > 0 ? (size_t)nprobe : ivf->nprobe;
      if (p.nprobe > ivf->nlist) p.nprobe = ivf->nlist;
      // an HNSW coarse quantiser (IVFn_HNSWm) must look further than the lists it returns
      faiss::SearchParametersHNSW qp;
      if (dynamic_cast<const faiss::IndexHNSW *>(ivf->quantizer)) {
        qp.efSearch = (int)(2 * p.nprobe > 64 ? 2 * p.nprobe : 64);
        p.quantizer_params = &qp;
      }
      if (base != ivf) {
        // IDMap over IVF: search the IVF, translate its ids
        ivf->search(nq, q, k, dist, labels, &p);
        auto m = dynamic_cast<const faiss::IndexIDMap *>(base);
        for (int64_t i = 0; i < nq * k; i++)
          if (labels[i] >= 0) labels[i] = m->id_map[labels[i]];
      } else {
        ivf->search(nq, q, k, dist, labels, &p);
      }
    } else if (const faiss::IndexHNSW *h = hnsw_of(base)) {
      faiss::SearchParametersHNSW p;
      p.efSearch = nprobe > 0 ? nprobe : h->hnsw.efSearch;
      if (p.efSearch < k) p.efSearch = (int)k;
      if (base != h) {
        h->search(nq, q, k, dist, labels, &p);
        auto m = dynamic_cast<const faiss::IndexIDMap *>(base);
        for (int64_t i = 0; i < nq * k; i++)
          if (labels[i] >= 0) labels[i] = m->id_map[labels[i]];
      } else {
        h->search(nq, q, k, dist, labels, &p);
      }
    } else {
      base->search(nq, q, k, dist, labels);
    }
  });
}

int64_t ann_faiss_ntotal(const ann_faiss *ix) { return ix->index->ntotal; }
int ann_faiss_dim(const ann_faiss *ix) { return ix->index->d; }
int ann_faiss_nlist(const ann_faiss *ix) {
  const faiss::IndexIVF *ivf = ivf_of(ix->index.get());
  return ivf ? (int)ivf->nlist : 0;
}
void ann_faiss_free(ann_faiss *ix) { delete ix; }

}  // extern "C"
