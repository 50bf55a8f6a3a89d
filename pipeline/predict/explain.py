"""Why a review got its probability: the effect of each token (occlusion), and the verdict while reading.

For the tokens t1..tn the network saw (the bundle's own tokenization, after truncation to
maxlen; out-of-vocabulary ones included, as the model sees them):

- `without`: P(positive) of the review with t_i left out, and `effect` = probability - without:
  how far t_i pushed the verdict towards positive (> 0) or negative (< 0); `effect_logit` is
  the same in log-odds, which still ranks the tokens of a review whose probability is
  saturated near 0 or 1 (where every `effect` rounds to zero);
- `prefix`: P(positive) after reading t1..t_i, so the list shows how the verdict evolves
  ("재미있을 줄 알았는데 ... 실망" starts positive and turns); `start` is the response to the
  empty sequence, before the first token.

The 2n sequences of a review (n without one token, n prefixes, the last of which is the
review itself) and the empty sequence go to the network together, in one `predict_ids` call.
"""
from __future__ import annotations

import numpy as np

from pipeline.text.vocab import OOV_ID


def explain_many(bundle, texts: list[str], token_lists: list[list[str]] | None = None) -> list[dict]:
    """One explanation dict per text (see the module docstring); JSON-serializable.

    token_lists: the texts' tokens, if the caller has segmented them already (`bundle.tokens`).
    """
    prep = bundle.preprocessor
    seen_lists, dropped = [], []
    for tokens in token_lists if token_lists is not None else bundle.tokens(texts):
        ids = prep.vocabulary.transform([tokens])[0]
        keep = slice(-prep.maxlen, None) if prep.truncating == "pre" else slice(0, prep.maxlen)
        pairs = list(zip(tokens, ids, strict=True))
        seen_lists.append(pairs[keep] if len(pairs) > prep.maxlen else pairs)
        dropped.append(max(0, len(pairs) - prep.maxlen))

    sequences: list[list[int]] = [[]]                                          # the empty sequence, once
    for pairs in seen_lists:
        ids = [i for _, i in pairs]
        sequences.extend(ids[:k] + ids[k + 1:] for k in range(len(ids)))       # without token k
        sequences.extend(ids[:k + 1] for k in range(len(ids)))                 # after reading tokens 1..k
    probabilities = bundle.predict_ids(prep.pad(sequences)).astype(np.float64)
    logits = _logit(probabilities)

    start, start_logit = probabilities[0], logits[0]
    out, at = [], 1
    for pairs, n_dropped in zip(seen_lists, dropped, strict=True):
        n = len(pairs)
        without, without_logit = probabilities[at:at + n], logits[at:at + n]
        prefix = probabilities[at + n:at + 2 * n]
        full, full_logit = (prefix[-1], logits[at + 2 * n - 1]) if n else (start, start_logit)
        at += 2 * n
        out.append({
            "probability": round(float(full), 6),
            "start": round(float(start), 6),
            "tokens": [{"token": token, "oov": token_id == OOV_ID, "effect": round(float(full - w), 6),
                        "effect_logit": round(float(full_logit - wl), 4),
                        "without": round(float(w), 6), "prefix": round(float(p), 6)}
                       for (token, token_id), w, wl, p in zip(pairs, without, without_logit, prefix, strict=True)],
            "truncated_tokens": n_dropped,
        })
    return out


def format_explanation(explanation: dict) -> list[str]:
    """Two indented lines for the plain-text output of `ksent predict --explain`.

        effect:  재미있 +0.412  줄 -0.020  실망 -0.513 ...
        reading: 0.50 > 재미있 0.93 > 을 0.91 > ... > 실망 0.05
    """
    if "experts" in explanation:         # a router: the gate's weight of each corpus's expert, then its explanation
        return [line for expert in explanation["experts"]
                for line in [f"  [{expert['domain']}: {expert['name']}, gate weight {expert['weight']:.2f}: "
                             f"{expert['probability']:.4f}]",
                             *("  " + sub for sub in format_explanation(expert))]]
    if "members" in explanation:         # an ensemble: each member on its own tokens
        return [line for member in explanation["members"]
                for line in [f"  [{member['name']}, weight {member['weight']:.2f}: {member['probability']:.4f}]",
                             *("  " + sub for sub in format_explanation(member))]]
    tokens = explanation["tokens"]
    if not tokens:
        return ["  (no tokens: the model's response to an empty review)"]
    if max(abs(t["effect"]) for t in tokens) >= 0.01:
        effect = "effect:  " + "  ".join(f"{_tok(t)} {t['effect']:+.3f}" for t in tokens)
    else:   # saturated probability: every effect rounds to 0, log-odds still rank the tokens
        effect = "effect (log-odds): " + "  ".join(f"{_tok(t)} {t['effect_logit']:+.2f}" for t in tokens)
    reading = " > ".join([f"{explanation['start']:.2f}"] + [f"{_tok(t)} {t['prefix']:.2f}" for t in tokens])
    lines = [f"  {effect}", f"  reading: {reading}"]
    if explanation["truncated_tokens"]:
        lines.append(f"  ({explanation['truncated_tokens']} tokens beyond maxlen were not read)")
    return lines


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-12, 1 - 1e-7)         # float32 probabilities: 0 and 1 happen (1 - 1e-7 is its last step)
    return np.log(p) - np.log1p(-p)


def _tok(token: dict) -> str:
    from pipeline.predict.lines import escape

    return escape(token["token"]) + ("(oov)" if token["oov"] else "")
