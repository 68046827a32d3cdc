"""Text this project writes itself: short chats about what the app shows, who the model is, and small arithmetic.

Why: the downloaded chat data (chitchat, chatterbot) is small talk. A classroom asks the model about itself and about
the pieces the app draws (tokens, logits, attention, temperature ...), in English and Chinese, and tries 2 + 3.
These templated chats give the tiny model a few hundred correct, consistent answers to learn from. They are
generated from a seed, so the data is reproducible; the validation split is a disjoint set of generated chats.
"""
from __future__ import annotations

import random

from gpt.training.sources import Conversation

NAME_EN = "Inside Forward"

# (questions, answers) in English; every question may be paired with every answer.
CONCEPTS_EN: list[tuple[list[str], list[str]]] = [
    (["Who are you?", "What are you?", "What is your name?", "Tell me about yourself.", "Are you a person?"],
     [f"I am a small language model that ships with the {NAME_EN} app. I predict the next token, one at a time.",
      "I am a tiny GPT trained for a classroom demo. I am not a person; I guess the next token from the text so far.",
      f"My name is {NAME_EN}. I am a small chat model, and the app lets you look inside my forward pass."]),
    (["What is a token?", "What are tokens?", "How do you read text?"],
     ["A token is a piece of text, often a word or part of a word. I read and write text as a list of token ids.",
      "Text is cut into tokens by a tokenizer. Each token has a number, and the model only ever sees those numbers."]),
    (["What is a logit?", "What are logits?", "What does the model output?"],
     ["For every possible next token the model gives one score, called a logit. A higher logit means a more "
      "likely token.",
      "Logits are the raw scores at the end of the forward pass, one per token in the vocabulary. Softmax turns "
      "them into probabilities."]),
    (["What is softmax?", "How do logits become probabilities?"],
     ["Softmax takes the exponential of each logit and divides by the sum, so all the numbers are positive and "
      "add up to one.",
      "Softmax turns scores into probabilities: bigger logits get bigger shares, and the shares sum to one."]),
    (["What is attention?", "How does attention work?", "What does self-attention do?"],
     ["Attention lets each token look back at earlier tokens. Its query is compared with their keys, and the "
      "result decides how much of each value it takes.",
      "In attention every position asks a question (the query), every earlier position offers a key and a value, "
      "and the best-matching keys contribute the most."]),
    (["What is an embedding?", "What is the embedding table?"],
     ["An embedding is a list of numbers for each token id. The first step of the model looks up this vector for "
      "every token.",
      "The embedding table has one row per token. The row is a vector that the rest of the network can compute "
      "with."]),
    (["What is temperature?", "What does the temperature setting do?"],
     ["Temperature divides the logits before softmax. A low temperature makes the choice almost fixed; a high "
      "temperature makes it more random.",
      "With temperature 0 the model always picks the most likely token. Higher temperatures spread the "
      "probability and give more varied text."]),
    (["What is top-k?", "What does top k sampling mean?"],
     ["Top-k keeps only the k most likely tokens and samples among them, so very unlikely tokens are never "
      "picked.",
      "With top-k, every token outside the k best is removed before sampling."]),
    (["What is a KV cache?", "Why is there a KV cache?"],
     ["The KV cache keeps the keys and values of tokens already seen, so each new token only needs one short "
      "forward step instead of reading the whole text again.",
      "Without a cache the model would recompute every earlier token at each step. The cache stores their keys "
      "and values and makes generation fast."]),
    (["What is a transformer?", "How are you built?", "What is inside you?"],
     ["I am a transformer: an embedding, a stack of blocks with attention and an MLP, a final norm and an output "
      "layer that gives logits.",
      "Inside me are a few transformer layers. Each layer mixes information between tokens with attention and "
      "then transforms each token with an MLP."]),
    (["What is the MLP?", "What does the feed forward layer do?"],
     ["The MLP works on each token separately: it widens the vector four times, applies a nonlinearity and "
      "projects it back.",
      "After attention, every block has an MLP that processes each position on its own."]),
    (["What is a forward pass?", "What happens when you read my message?"],
     ["A forward pass runs the tokens through every layer once and ends with logits for the next token.",
      "Your message becomes token ids, goes through the embedding, the transformer blocks and the output layer, "
      "and comes out as scores for the next token."]),
    (["How do you generate text?", "How do you write an answer?"],
     ["I predict a distribution over the next token, pick one, add it to the text and repeat until I decide to "
      "stop.",
      "One token at a time: forward pass, choose a token from the probabilities, append it, and do it again."]),
    (["What is a language model?"],
     ["A language model gives a probability to every possible next token, given the text before it.",
      "It is a program trained to continue text: it predicts what token comes next."]),
    (["What is rotary position embedding?", "How do you know the order of words?"],
     ["Position enters through rotary embeddings: queries and keys are rotated by an angle that depends on the "
      "position, so attention can tell near from far.",
      "I use rotary embeddings. Each query and key is rotated according to its position before attention."]),
    (["What is the softcap?", "Why are the logits capped?"],
     ["The logits pass through 15 times tanh of logit over 15, which keeps every score between minus 15 and 15.",
      "The softcap squashes very large logits smoothly so no score goes beyond 15."]),
    (["Can you help me?", "I have a question."],
     ["Of course. Ask me something short and I will do my best.", "Sure, what would you like to know?"]),
    (["Thank you!", "Thanks a lot.", "Thanks!"],
     ["You are welcome!", "Happy to help.", "Any time!"]),
    (["Goodbye!", "Bye!", "See you later."],
     ["Goodbye! Have a nice day.", "Bye! Come back any time.", "See you!"]),
    (["Hello!", "Hi!", "Hi there.", "Good morning!", "Hey!"],
     ["Hello! How can I help you today?", "Hi! Nice to meet you.", "Hello! What would you like to talk about?"]),
    (["How are you?", "How are you doing?", "How is it going?"],
     ["I am fine, thank you. How are you?", "I am doing well, thanks for asking!", "Pretty good! And you?"]),
    (["Tell me a joke.", "Say something funny."],
     ["Why did the token go to school? To become a little more predictable.",
      "I tried to tell a joke about softmax, but it was too normal."]),
    (["Write a short poem.", "Can you write a poem?"],
     ["The morning light is soft and slow,\nthe river sings where willows grow.",
      "A little star above the hill\nis shining on the waters still."]),
]

CONCEPTS_ZH: list[tuple[list[str], list[str]]] = [
    (["你是谁？", "你叫什么名字？", "介绍一下你自己。", "你是人吗？"],
     [f"我是{NAME_EN}应用自带的一个小语言模型，每次预测下一个词元。",
      "我是一个很小的GPT模型，专门用于课堂演示。我不是人，我根据前面的文字猜下一个词元。"]),
    (["什么是词元？", "什么是token？", "你怎么读文字？"],
     ["词元（token）是一小段文字，可能是一个字、一个词或词的一部分。模型只看到词元的编号。",
      "分词器把文字切成词元，每个词元有一个编号，模型处理的就是这些编号。"]),
    (["什么是logits？", "什么是对数几率？", "模型输出的是什么？"],
     ["模型为词表里每个可能的下一个词元给出一个分数，叫做logit。分数越高，这个词元越可能出现。",
      "logits是前向计算最后得到的原始分数，每个词元一个。softmax把它们变成概率。"]),
    (["什么是softmax？", "logits怎么变成概率？"],
     ["softmax先对每个分数取指数，再除以总和，所以结果都是正数，加起来等于一。",
      "softmax把分数变成概率：分数越大，分到的概率越多，全部概率之和为一。"]),
    (["什么是注意力？", "注意力机制是怎么工作的？", "自注意力做什么？"],
     ["注意力让每个词元回头看前面的词元：用查询（query）和各个键（key）比较，再按匹配程度取用它们的值（value）。",
      "在注意力里，每个位置提出一个查询，前面的位置提供键和值，最匹配的键贡献最多。"]),
    (["什么是嵌入？", "什么是词嵌入？"],
     ["嵌入就是每个词元编号对应的一组数字。模型的第一步就是为每个词元查出这个向量。",
      "嵌入表每个词元占一行，这一行向量就是后面网络计算的起点。"]),
    (["什么是温度？", "温度参数有什么用？"],
     ["温度在softmax之前去除logits。温度低，选择几乎固定；温度高，输出更随机。",
      "温度为0时，模型总是选最可能的词元；温度越高，文字越多样。"]),
    (["什么是top-k？", "top k采样是什么意思？"],
     ["top-k只保留最可能的k个词元，再从中抽样，很不可能的词元就不会被选中。",
      "使用top-k时，排在前k名之外的词元在抽样前都被去掉。"]),
    (["什么是KV缓存？", "为什么要用KV缓存？"],
     ["KV缓存保存已经处理过的词元的键和值，这样每生成一个新词元只需要很短的一步计算。",
      "没有缓存的话，每一步都要重新计算前面所有的词元。缓存让生成变快。"]),
    (["什么是Transformer？", "你的内部是什么样的？"],
     ["我是一个Transformer：先是嵌入，然后是几层包含注意力和MLP的模块，最后是归一化和输出层，给出logits。",
      "我的内部有几层Transformer模块。每层先用注意力在词元之间交换信息，再用MLP分别处理每个词元。"]),
    (["什么是前向传播？", "你读我的消息时发生了什么？"],
     ["前向传播就是让词元依次经过每一层，最后得到下一个词元的logits。",
      "你的消息先变成词元编号，经过嵌入、各个Transformer模块和输出层，最后变成下一个词元的分数。"]),
    (["你怎么生成文字？", "你是怎么写回答的？"],
     ["我先预测下一个词元的概率分布，选出一个，把它接到文字后面，然后重复，直到结束。",
      "一次一个词元：前向计算，按概率选一个词元，接上去，再来一次。"]),
    (["什么是语言模型？"],
     ["语言模型根据前面的文字，给每一个可能的下一个词元一个概率。",
      "语言模型是一个被训练来续写文字的程序：它预测下一个词元是什么。"]),
    (["你好", "你好！", "嗨", "早上好！", "您好"],
     ["你好！有什么可以帮你的吗？", "你好！很高兴见到你。", "你好！想聊点什么？"]),
    (["你好吗？", "最近怎么样？"],
     ["我很好，谢谢！你呢？", "挺好的，谢谢关心。"]),
    (["谢谢！", "谢谢你。", "多谢！"],
     ["不客气！", "很高兴能帮上忙。"]),
    (["再见！", "拜拜。"],
     ["再见！祝你愉快。", "拜拜，欢迎再来！"]),
    (["讲个笑话。", "说点好玩的。"],
     ["有一个词元去上学，因为它想变得更好预测。", "我想讲一个关于softmax的笑话，可是它太正常了。"]),
    (["写一首诗。", "你会写诗吗？"],
     ["春风吹绿柳，\n细雨润花红。", "明月照山间，\n清泉石上流。"]),
]


def concept_chats(rng: random.Random, n: int) -> list[Conversation]:
    pool = CONCEPTS_EN + CONCEPTS_ZH
    out = []
    for _ in range(n):
        questions, answers = rng.choice(pool)
        out.append([{"role": "user", "content": rng.choice(questions)},
                    {"role": "assistant", "content": rng.choice(answers)}])
    return out


_OPS_EN = {"+": ["What is {a} + {b}?", "What is {a} plus {b}?", "Calculate {a} + {b}.", "{a} + {b} = ?"],
           "-": ["What is {a} - {b}?", "What is {a} minus {b}?", "Calculate {a} - {b}.", "{a} - {b} = ?"],
           "*": ["What is {a} * {b}?", "What is {a} times {b}?", "Calculate {a} x {b}.", "{a} * {b} = ?"]}
_OPS_ZH = {"+": ["{a}加{b}等于多少？", "{a} + {b} 等于几？", "计算 {a} + {b}。"],
           "-": ["{a}减{b}等于多少？", "{a} - {b} 等于几？", "计算 {a} - {b}。"],
           "*": ["{a}乘以{b}等于多少？", "{a} * {b} 等于几？", "计算 {a} × {b}。"]}


def arithmetic_chats(rng: random.Random, n: int) -> list[Conversation]:
    """Single-step arithmetic with small numbers (answers are exact; the model will not always get them right)."""
    out = []
    for _ in range(n):
        op = rng.choice("+-*")
        if op == "*":
            a, b = rng.randint(0, 12), rng.randint(0, 12)
        else:
            a, b = rng.randint(0, 99), rng.randint(0, 99)
            if op == "-" and b > a:
                a, b = b, a
        c = a + b if op == "+" else a - b if op == "-" else a * b
        if rng.random() < 0.7:
            q = rng.choice(_OPS_EN[op]).format(a=a, b=b)
            ans = rng.choice([f"{a} {op} {b} = {c}.", f"The answer is {c}.", f"{c}"])
        else:
            q = rng.choice(_OPS_ZH[op]).format(a=a, b=b)
            ans = rng.choice([f"{a} {op} {b} = {c}。", f"答案是{c}。", f"等于{c}。"])
        out.append([{"role": "user", "content": q}, {"role": "assistant", "content": ans}])
    return out


def synthetic_chats(seed: int, n_concept: int, n_arith: int) -> list[Conversation]:
    rng = random.Random(seed)
    chats = concept_chats(rng, n_concept) + arithmetic_chats(rng, n_arith)
    rng.shuffle(chats)
    return chats
