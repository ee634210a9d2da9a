"""The explanation's words in English and Chinese (terms as the project's description uses them:
输入嵌入, 位置编码, 多头注意力, 前馈神经网络, 归一化层). A step holds message keys and their
fields; :func:`say` puts them into a language. Numbers are formatted before they get here, so
both languages show the same digits.

:data:`FORMULAS` holds each formula as Unicode text (terminal, Markdown) and as TeX (rendered by
matplotlib's mathtext into the HTML page)."""

from __future__ import annotations

from typing import Literal

Language = Literal["en", "zh"]
LANGUAGES: tuple[Language, ...] = ("en", "zh")

FORMULAS: dict[str, tuple[str, str]] = {
    "embedding": ("x = E[id] · √d_model", r"x = E_{\mathrm{id}}\ \sqrt{d_{\mathrm{model}}}"),
    "embedding_unscaled": ("x = E[id]", r"x = E_{\mathrm{id}}"),
    "sinusoidal": ("PE(pos, 2i) = sin(pos / 10000^(2i/d_model)),  PE(pos, 2i+1) = cos(pos / 10000^(2i/d_model))",
                   r"PE_{(pos,2i)} = \sin(pos / 10000^{2i/d_{\mathrm{model}}}),\ "
                   r"PE_{(pos,2i+1)} = \cos(pos / 10000^{2i/d_{\mathrm{model}}})"),
    "learned": ("x₀ = x + P[pos]", r"x_0 = x + P_{pos}"),
    "rotary": ("[q₁, q₂] → [q₁ cos(pos·θⱼ) − q₂ sin(pos·θⱼ), q₂ cos(pos·θⱼ) + q₁ sin(pos·θⱼ)],  θⱼ = 10000^(−2j/d_k)",
               r"(q_1, q_2) \rightarrow (q_1 \cos pos\theta_j - q_2 \sin pos\theta_j,\ "
               r"q_2 \cos pos\theta_j + q_1 \sin pos\theta_j),\ \theta_j = 10000^{-2j/d_k}"),
    "patches": ("x_p = W · flatten(patch_p) + b,  x₀ = [x_class; x_1 … x_N] + P",
                r"x_p = W\,\mathrm{flatten}(\mathrm{patch}_p) + b,\ x_0 = [x_{\mathrm{class}}; x_1 \ldots x_N] + P"),
    "attention": ("Attention(Q, K, V) = softmax(QKᵀ / √d_k) V",
                  r"\mathrm{Attention}(Q,K,V) = \mathrm{softmax}\left(\frac{QK^T}{\sqrt{d_k}}\right)V"),
    "multihead": ("MultiHead(Q, K, V) = Concat(head₁, …, head_h) Wᴼ,  head_i = Attention(Q W_iᵠ, K W_iᴷ, V W_iⱽ)",
                  r"\mathrm{MultiHead}(Q,K,V) = \mathrm{Concat}(\mathrm{head}_1,\ldots,\mathrm{head}_h)W^O,\ "
                  r"\mathrm{head}_i = \mathrm{Attention}(QW_i^Q, KW_i^K, VW_i^V)"),
    "layer_norm": ("LayerNorm(x) = γ ⊙ (x − μ) / √(σ² + ε) + β",
                   r"\mathrm{LayerNorm}(x) = \gamma \odot \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta"),
    "post_norm": ("x ← LayerNorm(x + Sublayer(x))", r"x \leftarrow \mathrm{LayerNorm}(x + \mathrm{Sublayer}(x))"),
    "pre_norm": ("x ← x + Sublayer(LayerNorm(x))", r"x \leftarrow x + \mathrm{Sublayer}(\mathrm{LayerNorm}(x))"),
    "ffn": ("FFN(x) = act(x W₁ + b₁) W₂ + b₂   (the paper: act = max(0, ·))",
            r"\mathrm{FFN}(x) = \mathrm{act}(xW_1 + b_1)W_2 + b_2"),
    "entropy": ("H = −Σⱼ aⱼ log₂ aⱼ", r"H = -\sum_j a_j \log_2 a_j"),
    "output": ("P(next token) = softmax(h Eᵀ)", r"P(y) = \mathrm{softmax}(h E^T)"),
    "classifier": ("P(class) = softmax(W_c h + b_c)", r"P(c) = \mathrm{softmax}(W_c h + b_c)"),
    "mean_pooling": ("e = mean_t(h_t) / ‖mean_t(h_t)‖", r"e = \bar{h} / \Vert\bar{h}\Vert"),
}

MESSAGES: dict[Language, dict[str, str]] = {
    "en": {
        "title": "What happens inside {model}: one forward pass of this {family} model, step by step",
        "family_encoder_decoder": "encoder-decoder (translation/summarization)",
        "family_decoder_only": "decoder-only (GPT)",
        "family_encoder_only": "encoder-only (BERT)",
        "family_vision": "vision (ViT)",
        "intro": "Every number below is computed from the formula shown and checked against the value the "
                 "model itself computed (forward hooks); the command stops if any differs.",
        "shape": "d_model = {d_model}, {heads} heads of d_k = {d_k}, d_v = {d_v}, d_ff = {d_ff}, {norm}, "
                 "{activation}, {positional} positions.",
        # 1
        "norm_post_name": "post-norm",
        "norm_pre_name": "pre-norm",
        "step_tokenization": "Tokenization",
        "step_patches": "Image patches (the tokens of a vision Transformer)",
        "tok_text": "Text: {text}",
        "tok_pieces": "{n} tokens, piece → id: {pieces}",
        "tok_bpe": "BPE merges for the word {word}: start from its characters {chars}, then merge the adjacent "
                   "pair that was learned first (lowest merge rank), again and again:",
        "tok_merge": "  {step}. {left} + {right} → {merged}   (merge #{rank})",
        "tok_result": "Result {pieces}: the same pieces as the tokenizer's own.",
        "tok_wordpiece": "WordPiece for the word {word}: take the longest vocabulary entry that starts what is "
                         "left of the word (continuations carry “##”), again and again: {pieces} (the same pieces "
                         "as the tokenizer's own).",
        "tok_characters": "A character-level vocabulary: every character is one token, there is nothing to merge.",
        "tok_target": "The decoder reads the translation shifted right, starting with BOS: {pieces}",
        "patch_text": "Image {name}: {channels} channel(s), {size} × {size} pixels, normalized as "
                      "(pixel / 255 − mean) / std. It is cut into {count} patches of {patch} × {patch} pixels, "
                      "read row by row; each becomes one token.",
        "patch_value": "Patch {index} (row {row}, column {column}) flattened has {width} values; "
                       "x_{index} = W · patch + b = {vec}",
        "patch_class": "A learned class token is put first; its final state classifies the image. Sequence: 1 + "
                       "{count} = {seq} tokens.",
        # 2
        "step_embedding": "Input embedding{where}",
        "where_source": " (encoder: source)",
        "where_target": " (decoder: target)",
        "emb_lookup": "Each id selects one row of the embedding matrix E ({vocab} × {d_model}); the paper "
                      "multiplies it by √d_model = {scale}.",
        "emb_lookup_unscaled": "Each id selects one row of the embedding matrix E ({vocab} × {d_model}); this model "
                               "does not scale it (as GPT-2 and BERT).",
        "emb_row": "Token {token} (id {id}) at position {pos}: E[{id}] = {row}",
        "emb_scaled": "  × {scale} = {vec}",
        "emb_shape": "Shape: ids ({seq},) → embeddings ({seq}, {d_model}).",
        # 3
        "step_positional": "Positional encoding{where}",
        "pos_sinusoidal": "Self-attention does not see order, so a fixed sinusoid is added to each position "
                          "(no parameters). For position {pos}:",
        "pos_value": "  PE({pos}, {index}) = {function}({pos} / 10000^({two_i}/{d_model})) = {value}",
        "pos_vector": "PE({pos}) = {vec}",
        "pos_learned": "Learned positions (GPT-2, BERT, ViT; the paper's Table 3 row E tries them): row {pos} "
                       "of a trained table P ({rows} × {d_model}) is added: P[{pos}] = {vec}",
        "pos_rotary": "Rotary positions: nothing is added here. In every self-attention layer each query and "
                      "key of a head is turned pairwise, feature j with j + d_k/2, by the angle pos · θⱼ, so "
                      "q · k depends only on how far apart the two tokens are. At position {pos} the first angles "
                      "are {angles} radians.",
        "pos_segments": "BERT also adds the token-type vector S[0] (sentence A) and normalizes the sum with "
                        "LayerNorm.",
        "pos_sum": "Input to the first layer at position {pos}: x₀ = {vec}; shape ({seq}, {d_model}). "
                   "(Dropout is off while explaining: the model is in evaluation mode.)",
        # 4
        "step_layer": "{stack} layer {index} of {count}",
        "stack_encoder": "Encoder",
        "stack_decoder": "Decoder",
        "layer_summary": "Layer {index}: the formulas were checked at every position and head; the detail "
                         "is shown for layer {shown} (--layer).",
        "part_self": "Multi-head self-attention",
        "part_masked": "Masked multi-head self-attention",
        "part_cross": "Cross-attention: the decoder's queries read the encoder's output",
        "part_norm": "Residual connection and layer normalization",
        "part_ffn": "Feed-forward network",
        "part_entropy": "Attention entropy per head",
        "att_projections": "Q = X W^Q, K = X W^K, V = X W^V: for head {head} of {heads}, Q is ({q_len}, {d_k}), "
                           "K ({k_len}, {d_k}), V ({k_len}, {d_v}). All heads come from one product with a "
                           "({d_model} × {width}) matrix.",
        "att_projections_cross": "Q = X W^Q from the decoder's states, K = M W^K and V = M W^V from the encoder's "
                                 "output M: for head {head} of {heads}, Q is ({q_len}, {d_k}), K ({k_len}, {d_k}), "
                                 "V ({k_len}, {d_v}). The encoder's keys and values are the same at every decoding "
                                 "step, so a decoder computes them once per sentence.",
        "att_mask_all": "Over the whole sequence the mask hides {hidden} of the {pairs} query–key pairs: every key "
                        "after its query (above the diagonal of the heatmap).",
        "att_query": "Query of position {pos} ({token}): q = {vec}",
        "att_scores": "Its score against every key, q · kⱼ / √d_k with √d_k = {sqrt_dk}, then softmax:",
        "att_header": "  key  token            score     weight",
        "att_row": "  {j:>3}  {token:<15} {score:>8}  {weight:>8}",
        "att_masked": "The mask hides the {count} later position(s) {tokens}: score −∞, weight 0 (a token may "
                      "not read the future).",
        "att_nothing_hidden": "The mask hides nothing here: every key is visible to this query.",
        "att_top": "This head reads mostly: {top}.",
        "att_head_output": "Head output Σⱼ aⱼ vⱼ ({d_v} values): {vec}",
        "att_concat": "Concat(head₁, …, head_{heads}) has {width} values; · W^O ({width} × {d_model}) + b = {vec}",
        "att_cross_reads": "Which source token each target token reads most (mean over the heads of this layer):",
        "att_cross_row": "  {target} → {source} ({weight})",
        "norm_post": "Post-norm (the paper): at position {pos}, x + Sublayer(x) has mean μ = {mean} and variance "
                     "σ² = {variance}; LayerNorm with γ = {gamma}, β = {beta} gives {vec}",
        "norm_pre": "Pre-norm: at position {pos} the sub-layer reads LayerNorm(x): x has mean μ = {mean} and "
                    "variance σ² = {variance}; with γ = {gamma}, β = {beta}: {vec}. The residual adds the "
                    "sub-layer's output to x, unnormalized: x + Sublayer = {sum}",
        "ffn_hidden": "At position {pos}: x W₁ + b₁ ({d_ff} values) = {hidden}; after {activation}: {activated}",
        "ffn_zero": "{share} of the {d_ff} hidden units are exactly zero at position {pos} ({share_all} over all "
                    "positions): ReLU switches them off.",
        "ffn_negative": "{share} of the {d_ff} hidden units are negative before {activation} at position {pos} "
                        "({share_all} over all positions): the activation maps them close to zero.",
        "ffn_output": "FFN(x) at position {pos} = {vec}",
        "entropy_intro": "Mean over the queries, in bits (0 = the query reads one key only; log₂ n = all n keys "
                         "equally):",
        "entropy_row": "  {kind}: {values}",
        "final_norm": "A pre-norm stack ends with one more LayerNorm: at position {pos}, {vec}",
        # 5
        "step_output": "Output",
        "out_lm": "logits = h Eᵀ ({vocab} values) at the last position ({token}), softmax → the most likely "
                  "next tokens:",
        "out_top": "  {token:<18} {probability}",
        "out_translation": "The translation (beam search, beam {beam}): {translation}",
        "out_step": "Step {step}: having read {prefix}, the decoder's distribution over the next token:",
        "out_chosen": "  → the translation continues with {token}{note}",
        "out_not_greedy": " (not the most likely single token: beam search keeps the best whole sentences)",
        "out_copy": "This model also copies source tokens (copy attention): its final distribution mixes the "
                    "one above with the cross-attention; shown is softmax(h Eᵀ) alone.",
        "out_classes": "The classifier reads the pooled first token, pooled = tanh(W_p h₀ + b_p), then "
                       "softmax(W_c pooled + b_c):",
        "out_vision": "The classifier reads the class token's final state: softmax(W_c h₀ + b_c):",
        "out_masked_lm": "The masked-LM head at position {pos} ({token}): the most likely tokens there:",
        "out_embedding": "The sentence embedding is the mean of the token states, L2-normalized ({d_model} values): "
                         "{vec}",
        # checks
        "step_checks": "Checks",
        "checks_intro": "{count} comparisons of {values} values between the formulas above (plain tensor "
                        "operations, float64) and the model's own intermediate values (forward hooks, float32): "
                        "the largest difference is {worst}; allowed 1e-5 · (1 + |value|), of which at most {used} was used.",
        "check_row": "  {what}: max |Δ| = {error}",
        "figure_heads": "{stack} layer {index}, {kind}: the attention weights of each head (row: query, column: key)",
        "kind_self": "self-attention",
        "kind_masked": "masked self-attention",
        "kind_cross": "cross-attention",
        "formulas": "Formulas",
    },
    "zh": {
        "title": "{model} 内部发生了什么:这个{family}模型的一次前向计算,逐步讲解",
        "family_encoder_decoder": "编码器-解码器(翻译/摘要)",
        "family_decoder_only": "仅解码器(GPT)",
        "family_encoder_only": "仅编码器(BERT)",
        "family_vision": "视觉(ViT)",
        "intro": "下面的每个数字都按所示公式计算,并与模型自己算出的中间值(前向钩子)核对;只要有一个不一致,命令就会报错停止。",
        "shape": "d_model = {d_model},{heads} 个注意力头,d_k = {d_k},d_v = {d_v},d_ff = {d_ff},{norm},"
                 "{activation},{positional} 位置。",
        "norm_post_name": "后归一化",
        "norm_pre_name": "前归一化",
        "step_tokenization": "分词(Tokenization)",
        "step_patches": "图像块(视觉 Transformer 的词元)",
        "tok_text": "文本:{text}",
        "tok_pieces": "共 {n} 个词元,片段 → 编号:{pieces}",
        "tok_bpe": "单词 {word} 的 BPE 合并过程:从字符 {chars} 开始,反复合并最先学到(合并序号最小)的相邻一对:",
        "tok_merge": "  {step}. {left} + {right} → {merged}   (第 {rank} 条合并规则)",
        "tok_result": "结果 {pieces}:与分词器自己的切分完全相同。",
        "tok_wordpiece": "单词 {word} 的 WordPiece 切分:每次取词表中能匹配剩余部分开头的最长条目(后续片段带“##”):"
                         "{pieces}(与分词器自己的切分相同)。",
        "tok_characters": "字符级词表:每个字符就是一个词元,没有合并。",
        "tok_target": "解码器读入右移一位、以 BOS 开头的译文:{pieces}",
        "patch_text": "图像 {name}:{channels} 个通道,{size} × {size} 像素,按 (像素 / 255 − 均值) / 标准差 归一化。"
                      "它被切成 {count} 个 {patch} × {patch} 像素的图像块,逐行读取;每块成为一个词元。",
        "patch_value": "第 {index} 块(第 {row} 行,第 {column} 列)展平后有 {width} 个值;"
                       "x_{index} = W · 图像块 + b = {vec}",
        "patch_class": "最前面放一个可学习的类别词元;它的最终状态用于分类。序列长度:1 + {count} = {seq}。",
        "step_embedding": "输入嵌入(Input Embedding){where}",
        "where_source": "(编码器:源语言)",
        "where_target": "(解码器:目标语言)",
        "emb_lookup": "每个编号选出嵌入矩阵 E({vocab} × {d_model})中的一行;论文将其乘以 √d_model = {scale}。",
        "emb_lookup_unscaled": "每个编号选出嵌入矩阵 E({vocab} × {d_model})中的一行;本模型不做缩放(与 GPT-2、BERT 相同)。",
        "emb_row": "位置 {pos} 的词元 {token}(编号 {id}):E[{id}] = {row}",
        "emb_scaled": "  × {scale} = {vec}",
        "emb_shape": "形状:编号 ({seq},) → 嵌入 ({seq}, {d_model})。",
        "step_positional": "位置编码(Positional Encoding){where}",
        "pos_sinusoidal": "自注意力本身看不到顺序,所以给每个位置加上固定的正弦/余弦信号(没有参数)。位置 {pos}:",
        "pos_value": "  PE({pos}, {index}) = {function}({pos} / 10000^({two_i}/{d_model})) = {value}",
        "pos_vector": "PE({pos}) = {vec}",
        "pos_learned": "可学习的位置向量(GPT-2、BERT、ViT;论文表 3 的 E 行试验过):把训练得到的表 P"
                       "({rows} × {d_model})的第 {pos} 行加上去:P[{pos}] = {vec}",
        "pos_rotary": "旋转位置编码:这里什么也不加。在每个自注意力层中,每个头的查询和键按特征对(j 与 j + d_k/2)旋转角度 "
                      "pos · θⱼ,于是 q · k 只取决于两个词元之间的距离。位置 {pos} 的前几个角度为 {angles} 弧度。",
        "pos_segments": "BERT 还加上句子类型向量 S[0](句子 A),并用 LayerNorm 归一化这个和。",
        "pos_sum": "位置 {pos} 进入第一层的输入:x₀ = {vec};形状 ({seq}, {d_model})。(讲解时模型处于评估模式,Dropout 关闭。)",
        "step_layer": "{stack}第 {index} 层(共 {count} 层)",
        "stack_encoder": "编码器",
        "stack_decoder": "解码器",
        "layer_summary": "第 {index} 层:公式已在所有位置和所有头上核对;详细过程只展示第 {shown} 层(--layer)。",
        "part_self": "多头注意力:自注意力(Multi-Head Self-Attention)",
        "part_masked": "带掩码的多头注意力:解码器的自注意力",
        "part_cross": "多头注意力:交叉注意力,解码器的查询读取编码器的输出",
        "part_norm": "残差连接与归一化层(Layer Normalization)",
        "part_ffn": "前馈神经网络(Feed-Forward Network)",
        "part_entropy": "每个注意力头的熵",
        "att_projections": "Q = X W^Q,K = X W^K,V = X W^V:第 {head} 个头(共 {heads} 个)的 Q 形状为 ({q_len}, {d_k}),"
                           "K 为 ({k_len}, {d_k}),V 为 ({k_len}, {d_v})。所有头由一个 ({d_model} × {width}) 矩阵一次乘法算出。",
        "att_projections_cross": "Q = X W^Q 来自解码器的状态,K = M W^K、V = M W^V 来自编码器的输出 M:第 {head} 个头"
                                 "(共 {heads} 个)的 Q 形状为 ({q_len}, {d_k}),K 为 ({k_len}, {d_k}),V 为 ({k_len}, {d_v})。"
                                 "编码器的键和值在每个解码步骤都相同,所以解码器每个句子只算一次。",
        "att_mask_all": "在整个序列上,掩码遮住了 {pairs} 个查询–键对中的 {hidden} 个:每个查询之后的所有键(热力图对角线以上)。",
        "att_query": "位置 {pos}({token})的查询:q = {vec}",
        "att_scores": "它与每个键的分数 q · kⱼ / √d_k(√d_k = {sqrt_dk}),再经 softmax:",
        "att_header": "  键   词元             分数      权重",
        "att_row": "  {j:>3}  {token:<15} {score:>8}  {weight:>8}",
        "att_masked": "掩码遮住了之后的 {count} 个位置 {tokens}:分数为 −∞,权重为 0(词元不能读取未来)。",
        "att_nothing_hidden": "这里掩码不遮任何位置:这个查询能看到所有键。",
        "att_top": "这个头主要关注:{top}。",
        "att_head_output": "该头的输出 Σⱼ aⱼ vⱼ({d_v} 个值):{vec}",
        "att_concat": "Concat(head₁, …, head_{heads}) 共 {width} 个值;乘以 W^O({width} × {d_model})再加 b = {vec}",
        "att_cross_reads": "每个目标词元最关注哪个源词元(本层各头的平均):",
        "att_cross_row": "  {target} → {source}({weight})",
        "norm_post": "后归一化(论文的做法):位置 {pos} 上 x + Sublayer(x) 的均值 μ = {mean},方差 σ² = {variance};"
                     "经 γ = {gamma}、β = {beta} 的 LayerNorm 得到 {vec}",
        "norm_pre": "前归一化:位置 {pos} 上子层读入 LayerNorm(x):x 的均值 μ = {mean},方差 σ² = {variance};"
                    "γ = {gamma},β = {beta}:{vec}。残差把子层输出直接加到未归一化的 x 上:x + Sublayer = {sum}",
        "ffn_hidden": "位置 {pos}:x W₁ + b₁({d_ff} 个值)= {hidden};经过 {activation} 后:{activated}",
        "ffn_zero": "位置 {pos} 上 {d_ff} 个隐藏单元中有 {share} 恰好为零(所有位置合计 {share_all}):ReLU 把它们关掉了。",
        "ffn_negative": "位置 {pos} 上 {d_ff} 个隐藏单元中有 {share} 在 {activation} 之前为负(所有位置合计 {share_all}):"
                        "激活函数把它们映射到接近零。",
        "ffn_output": "位置 {pos} 的 FFN(x) = {vec}",
        "entropy_intro": "对所有查询取平均,单位为比特(0 表示只读一个键;log₂ n 表示平均地读 n 个键):",
        "entropy_row": "  {kind}:{values}",
        "final_norm": "前归一化的层栈最后还有一个 LayerNorm:位置 {pos} 上为 {vec}",
        "step_output": "输出",
        "out_lm": "logits = h Eᵀ(共 {vocab} 个值),取最后一个位置({token}),经 softmax → 最可能的下一个词元:",
        "out_top": "  {token:<18} {probability}",
        "out_translation": "译文(束搜索,束宽 {beam}):{translation}",
        "out_step": "第 {step} 步:读入 {prefix} 之后,解码器对下一个词元的分布:",
        "out_chosen": "  → 译文接着选用 {token}{note}",
        "out_not_greedy": "(不是单步最可能的词元:束搜索保留的是整体最好的句子)",
        "out_copy": "这个模型还会复制源词元(复制注意力):最终分布把上面的分布与交叉注意力混合;这里只展示 softmax(h Eᵀ)。",
        "out_classes": "分类器读取池化后的第一个词元 pooled = tanh(W_p h₀ + b_p),再计算 softmax(W_c pooled + b_c):",
        "out_vision": "分类器读取类别词元的最终状态:softmax(W_c h₀ + b_c):",
        "out_masked_lm": "位置 {pos}({token})上的掩码语言模型头:那里最可能的词元:",
        "out_embedding": "句向量是所有词元状态的平均,再做 L2 归一化({d_model} 个值):{vec}",
        "step_checks": "核对",
        "checks_intro": "上面的公式(普通张量运算,float64)与模型自己的中间值(前向钩子,float32)共比较 {count} 次、"
                        "{values} 个数值:最大差异为 {worst};允许 1e-5 · (1 + |值|),最多用到其中的 {used}。",
        "check_row": "  {what}:最大 |Δ| = {error}",
        "figure_heads": "{stack}第 {index} 层,{kind}:每个头的注意力权重(行:查询,列:键)",
        "kind_self": "自注意力",
        "kind_masked": "带掩码的自注意力",
        "kind_cross": "交叉注意力",
        "formulas": "公式",
    },
}


def say(language: Language, key: str, **fields: object) -> str:
    """The message ``key`` in ``language`` with its fields filled in."""
    return MESSAGES[language][key].format(**fields)
