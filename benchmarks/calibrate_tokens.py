"""Fit the token heuristic in ``llmbatch_pd/planning/heuristic.py`` against real tiktoken encodings.

Why: without tiktoken's encoding files (which it downloads at first use), the library counts
tokens with a linear model over character classes. This script measures how many tokens each
class really costs in o200k_base and cl100k_base, fits the coefficients (non-negative least
squares, weighted by 1/sqrt(tokens) so that short and long samples both count), and prints
a table per script plus the ``COEFFICIENTS`` dict to paste into planning/heuristic.py.

Needs ``tiktoken`` and the encoding files, offline: they are taken from tiktoken's cache
(``$TIKTOKEN_CACHE_DIR``, else ``<tempdir>/data-gym-cache``), else from the ``bpe-openai``
package, whose wheel bundles byte-identical copies (checked against tiktoken's SHA-256), else
from ``--file NAME=PATH``. For example, in a scratch venv::

    pip install tiktoken bpe-openai
    python benchmarks/calibrate_tokens.py

Extra texts can be added with ``--corpus label=path.txt`` (one sample per paragraph).
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import importlib
import importlib.util
import math
import sys
from collections import defaultdict
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# Samples written for this script: reviews, prompts, prose, code, numbers, in the scripts a
# DataFrame of user text is likely to hold. Labels are for the report only; the fit is joint.
# fmt: off
CORPUS: list[tuple[str, str]] = [
    # --- English: reviews, prose, instructions -------------------------------------------
    ("english", "The battery lasts about two days with normal use, which is better than I expected for a phone at this price."),
    ("english", "Shipping took almost three weeks and the box arrived crushed. Customer service never answered my emails."),
    ("english", "Great little coffee grinder. It is quiet, easy to clean, and the burrs give a very even grind for espresso."),
    ("english", "I returned it after a week: the strap broke twice and the replacement part was not in stock."),
    ("english", "Classify the sentiment of this review as positive, negative or neutral. Answer with one word only."),
    ("english", "Summarise the following customer complaint in one sentence, keeping the product name and the main problem."),
    ("english", "The committee postponed its decision on the new housing development until the environmental assessment is complete."),
    ("english", "Researchers found that participants who slept fewer than six hours were significantly more likely to catch a cold."),
    ("english", "Preheat the oven to a moderate temperature, whisk the eggs with the sugar until pale, then fold in the flour gently."),
    ("english", "Our quarterly revenue grew modestly, driven mainly by subscriptions, while hardware sales declined in most regions."),
    ("english", "Honestly? It's fine. Not amazing, not terrible. The colour is a bit darker than in the photos, but it fits well."),
    ("english", "Extract the company name, the invoice date and the total amount from the text below and return them as JSON."),
    ("english", "The hotel staff were friendly and the room was spotless, but the street noise kept us awake until two in the morning."),
    ("english", "Photosynthesis converts light energy into chemical energy, storing it in the bonds of glucose molecules."),
    ("english", "If the installation fails, uninstall the previous version, restart your computer and run the installer as administrator."),
    ("english", "We've been using this app for our small team's scheduling; it's intuitive, but notifications are unreliable on Android."),
    ("english", "Internationalization and interoperability requirements substantially complicated the procurement process."),
    ("english", "The cat sat on the mat and looked out of the window at the rain falling on the garden."),
    # --- European languages with accents (Latin script, not Vietnamese) -------------------
    ("latin-accented", "Le service était très lent et le plat principal est arrivé froid. Je ne reviendrai pas dans ce restaurant."),
    ("latin-accented", "Das Gerät ist leicht zu bedienen, aber die Akkulaufzeit ist enttäuschend kurz für den hohen Preis."),
    ("latin-accented", "El envío llegó rápido y el producto funciona perfectamente. Muy recomendable para el uso diario."),
    ("latin-accented", "A qualidade do tecido é ótima, mas o tamanho veio menor do que o indicado na tabela de medidas."),
    ("latin-accented", "Die Bedienungsanleitung war unverständlich, und der Kundendienst hat auf meine Anfrage nie geantwortet."),
    ("latin-accented", "Très bon rapport qualité-prix ; l'écran est lumineux et la batterie tient facilement deux journées."),
    ("latin-accented", "Zamówienie dotarło szybko, ale opakowanie było uszkodzone, a jeden z elementów był pęknięty."),
    ("latin-accented", "Ürün açıklamada yazıldığı gibi değildi, iade süreci de çok uzun sürdü."),
    # --- Vietnamese with diacritics --------------------------------------------------------
    ("vietnamese", "Sản phẩm dùng rất tốt, pin trâu, giao hàng nhanh. Tôi sẽ tiếp tục ủng hộ shop."),
    ("vietnamese", "Giao hàng quá chậm, hộp bị móp méo và sản phẩm bên trong bị trầy xước nhiều chỗ."),
    ("vietnamese", "Nhân viên phục vụ nhiệt tình, đồ ăn ngon nhưng giá hơi cao so với chất lượng."),
    ("vietnamese", "Hãy phân loại cảm xúc của bình luận sau thành tích cực, tiêu cực hoặc trung lập."),
    ("vietnamese", "Tôi đã mua chiếc máy này được hai tháng và đến nay nó vẫn hoạt động ổn định, không có lỗi gì."),
    ("vietnamese", "Chính phủ vừa công bố kế hoạch đầu tư mới nhằm phát triển hạ tầng giao thông ở các tỉnh miền Trung."),
    ("vietnamese", "Khách sạn sạch sẽ, phòng rộng rãi, view đẹp nhìn ra biển, nhưng wifi thường xuyên bị mất kết nối."),
    ("vietnamese", "Theo các nhà nghiên cứu, việc ngủ đủ giấc giúp cải thiện trí nhớ và tăng cường hệ miễn dịch."),
    ("vietnamese", "Màu sắc không giống như trong hình, chất vải mỏng và đường may rất cẩu thả. Thất vọng!"),
    ("vietnamese", "Vui lòng tóm tắt đoạn văn bản sau trong một câu, giữ lại tên sản phẩm và vấn đề chính."),
    ("vietnamese", "Thành phố Hồ Chí Minh là trung tâm kinh tế lớn nhất cả nước, với dân số hơn chín triệu người."),
    ("vietnamese", "Ứng dụng dễ sử dụng, giao diện thân thiện, nhưng thỉnh thoảng bị treo khi mở nhiều tab cùng lúc."),
    ("vietnamese", "Mình rất hài lòng với đơn hàng lần này, đóng gói cẩn thận và shop tư vấn nhiệt tình."),
    ("vietnamese", "Điện thoại nóng lên nhanh khi chơi game, loa nhỏ và camera chụp thiếu sáng không được rõ nét."),
    # --- Chinese ---------------------------------------------------------------------------
    ("chinese", "这款手机的电池续航非常好，正常使用可以坚持两天，性价比很高。"),
    ("chinese", "物流太慢了，等了将近三个星期，而且包装盒被压坏了，客服也一直不回复。"),
    ("chinese", "请将以下评论的情感分类为正面、负面或中性，只回答一个词。"),
    ("chinese", "研究人员发现，每晚睡眠少于六小时的参与者更容易感冒。"),
    ("chinese", "酒店的服务人员很热情，房间也很干净，但是街上的噪音让我们一直睡不着。"),
    ("chinese", "政府宣布了一项新的投资计划，旨在改善中部地区的交通基础设施。"),
    ("chinese", "衣服的颜色和图片上不一样，面料很薄，做工也很粗糙，非常失望。"),
    ("chinese", "这个应用程序使用起来很方便，界面也很友好，但是有时候会突然卡住。"),
    # --- Japanese --------------------------------------------------------------------------
    ("japanese", "このコーヒーミルはとても静かで、掃除も簡単です。エスプレッソ用に均一に挽けます。"),
    ("japanese", "配送に三週間近くかかり、箱もつぶれていました。サポートからの返事もありません。"),
    ("japanese", "次のレビューの感情を、ポジティブ、ネガティブ、ニュートラルのいずれかに分類してください。"),
    ("japanese", "ホテルのスタッフは親切で部屋も清潔でしたが、夜遅くまで外の騒音がひどかったです。"),
    ("japanese", "研究者たちは、睡眠時間が六時間未満の人は風邪をひきやすいことを発見しました。"),
    ("japanese", "色は写真よりも少し暗めですが、サイズはぴったりで着心地もいいです。"),
    # --- Korean ----------------------------------------------------------------------------
    ("korean", "배터리가 오래가고 화면도 밝아서 아주 만족합니다. 가격 대비 성능이 좋아요."),
    ("korean", "배송이 너무 늦었고 상자가 찌그러져서 왔어요. 고객센터도 답변이 없습니다."),
    ("korean", "다음 리뷰의 감정을 긍정, 부정 또는 중립으로 분류하세요."),
    ("korean", "호텔 직원들은 친절했고 방도 깨끗했지만 밤늦게까지 거리 소음이 심했습니다."),
    ("korean", "연구진은 하루 여섯 시간 미만으로 자는 사람들이 감기에 더 잘 걸린다는 사실을 발견했다."),
    ("korean", "색상이 사진보다 조금 어둡지만 사이즈는 딱 맞고 착용감도 좋아요."),
    # --- Emoji-heavy -----------------------------------------------------------------------
    ("emoji", "Love it!!! 😍😍😍 Best purchase this year 🔥🔥"),
    ("emoji", "Worst delivery ever 😡👎 never again"),
    ("emoji", "😀😃😄😁😆😅🤣😂🙂🙃😉😊😇"),
    ("emoji", "Happy birthday 🎉🎂🎈 hope you have a great day 🥳"),
    ("emoji", "👍👍👍"),
    ("emoji", "Family trip 👨‍👩‍👧‍👦 to the beach 🏖️☀️🌊"),
    ("emoji", "Thumbs up 👍🏽 from the whole team 🙌🏻 and 🇻🇳 🇯🇵 🇫🇷 flags"),
    ("emoji", "Hàng đẹp lắm 😍 giao nhanh 🚚💨 sẽ ủng hộ tiếp ❤️❤️"),
    ("emoji", "太好吃了😋👍 下次还来🙏"),
    ("emoji", "🚀🌕✨💎🙌"),
    # --- Cyrillic and other alphabets ------------------------------------------------------
    ("cyrillic", "Доставка была быстрой, но упаковка оказалась повреждена, а инструкция только на английском."),
    ("cyrillic", "Отличный телефон: батарея держит два дня, камера снимает чётко даже вечером."),
    ("cyrillic", "Классифицируйте тональность следующего отзыва как положительную, отрицательную или нейтральную."),
    ("cyrillic", "Обслуговування було повільним, а їжа прийшла холодною. Більше не повернуся."),
    ("other-scripts", "Η εξυπηρέτηση ήταν εξαιρετική και το φαγητό πολύ νόστιμο, αλλά οι τιμές είναι λίγο υψηλές."),
    ("other-scripts", "كانت الخدمة ممتازة والطعام لذيذاً، لكن الأسعار مرتفعة قليلاً مقارنة بالجودة."),
    ("other-scripts", "השירות היה מצוין והאוכל טעים מאוד, אבל המחירים קצת גבוהים."),
    ("other-scripts", "सेवा बहुत अच्छी थी और खाना स्वादिष्ट था, लेकिन कीमतें थोड़ी ज़्यादा हैं।"),
    ("other-scripts", "บริการดีมาก อาหารอร่อย แต่ราคาค่อนข้างสูงเมื่อเทียบกับคุณภาพ"),
    ("other-scripts", "সেবা খুব ভালো ছিল এবং খাবার সুস্বাদু, কিন্তু দাম একটু বেশি।"),
    ("other-scripts", "डिलीवरी बहुत देर से हुई और डिब्बा टूटा हुआ था। ग्राहक सेवा ने कोई जवाब नहीं दिया।"),
    ("other-scripts", "สินค้าส่งช้ามาก กล่องบุบ และฝ่ายบริการลูกค้าไม่ตอบกลับเลย"),
    ("other-scripts", "التوصيل كان سريعاً، لكن العلبة وصلت مكسورة ولم يرد خدمة العملاء على رسائلي."),
    ("other-scripts", "Η παράδοση ήταν γρήγορη, αλλά η συσκευασία ήταν κατεστραμμένη."),
    ("cyrillic", "Качество ткани хорошее, но размер оказался меньше, чем указано в таблице."),
    # --- Code, JSON and structured text ----------------------------------------------------
    ("code", 'def fib(n: int) -> int:\n    """Return the n-th Fibonacci number."""\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n'),
    ("code", '{"name": "Acme Corp", "invoice_date": "2024-03-15", "total": 1249.90, "currency": "EUR", "items": [{"sku": "A-102", "qty": 3}]}'),
    ("code", "SELECT customer_id, COUNT(*) AS orders, SUM(total) AS revenue\nFROM orders\nWHERE created_at >= '2024-01-01'\nGROUP BY customer_id\nORDER BY revenue DESC\nLIMIT 10;"),
    ("code", "<div class=\"review\">\n  <p>Great product, fast shipping!</p>\n  <span class=\"stars\">5/5</span>\n</div>"),
    ("code", "const total = items.reduce((sum, item) => sum + item.price * item.qty, 0);\nconsole.log(`Total: ${total.toFixed(2)}`);"),
    ("code", "| id | name  | score |\n|----|-------|-------|\n| 1  | Alice | 0.93  |\n| 2  | Bob   | 0.71  |"),
    # --- Numbers, dates, identifiers -------------------------------------------------------
    ("numbers", "Order #4829113 placed on 2024-11-02 at 14:37, total $1,249.99 including 8.25% tax."),
    ("numbers", "Call +1 (415) 555-0134 or +84 912 345 678 between 9:00 and 17:30."),
    ("numbers", "3.14159265358979323846264338327950288419716939937510"),
    ("numbers", "Invoice INV-2023-000187: 12 x 49.95 = 599.40; shipping 15.00; VAT 20% = 122.88; due 30/06/2024."),
    # --- Mixed -----------------------------------------------------------------------------
    ("mixed", "Review: 'Sản phẩm tốt' (Vietnamese for 'good product') - rating 5/5 ⭐⭐⭐⭐⭐"),
    ("mixed", "Product: iPhone 15 Pro 256GB\nReview: 性能很强，但是价格太贵了。\nRating: 4/5"),
    ("mixed", "Customer wrote in Japanese: 「とても良い商品でした！」 which means it was a very good product."),

    # --- Multi-line text -------------------------------------------------------------------
    ("multiline", "Hi Sarah,\n\nThanks for sending the contract. I have two small questions:\n\n1. Is the start date fixed?\n2. Who signs for your side?\n\nBest regards,\nTom"),
    ("multiline", "Ingredients:\n- 2 eggs\n- 200 g flour\n- 1 cup of milk\n- a pinch of salt\n\nMix everything and rest for 30 minutes."),
    ("multiline", "# Release notes\n\n## Fixed\n\n* Crash when the file name contained spaces.\n* Wrong totals in the monthly report.\n\n## Added\n\n* Dark mode."),
    ("multiline", "Kính gửi anh Minh,\n\nEm xin gửi lại báo giá đã chỉnh sửa theo yêu cầu.\nMọi thắc mắc anh cứ liên hệ em nhé.\n\nTrân trọng,\nLan"),
    ("multiline", "订单号：20240315\n商品：蓝牙耳机\n数量：2\n备注：请尽快发货，谢谢！"),
]
# fmt: on


def load_planning_module(name: str) -> ModuleType:
    """Load llmbatch_pd/planning/<name>.py without the package (tokens and heuristic are
    stdlib-only, so no pandas is needed here): a bare package stands in for ``planning``."""
    if "_llmbatch_planning" not in sys.modules:
        package = ModuleType("_llmbatch_planning")
        package.__path__ = [str(ROOT / "llmbatch_pd" / "planning")]
        sys.modules["_llmbatch_planning"] = package
    return importlib.import_module(f"_llmbatch_planning.{name}")


def load_encoding(tokens: ModuleType, name: str, files: dict[str, str]) -> tuple[Any, str]:
    """The exact encoding and where it came from; never downloads."""
    import tiktoken

    encoding = tokens._load_encoding(name)
    if encoding is not None:
        return encoding, "tiktoken cache"
    _, sha256 = tokens._ENCODING_FILES[name]
    data, source = None, ""
    if name in files:
        raw = Path(files[name]).read_bytes()
        data, source = (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw), files[name]
    elif importlib.util.find_spec("bpe_openai") is not None:
        spec = importlib.util.find_spec("bpe_openai")
        assert spec is not None and spec.origin is not None
        path = Path(spec.origin).parent / "data" / f"{name}.tiktoken.gz"
        if path.is_file():
            data, source = gzip.decompress(path.read_bytes()), "bpe-openai package data"
    if data is None:
        sys.exit(f"no {name} file found offline: see this script's docstring")
    if hashlib.sha256(data).hexdigest() != sha256:
        sys.exit(f"{source}: SHA-256 differs from tiktoken's {name}")
    ranks = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    pattern, special = tokens._ENCODING_SPECS[name]
    return tiktoken.Encoding(
        name, pat_str=pattern, mergeable_ranks=ranks, special_tokens=special
    ), source


def nnls(rows: list[list[float]], targets: list[float], sweeps: int = 5000) -> list[float]:
    """Non-negative least squares by coordinate descent on the normal equations."""
    n = len(rows[0])
    gram = [[sum(r[i] * r[j] for r in rows) for j in range(n)] for i in range(n)]
    rhs = [sum(r[i] * t for r, t in zip(rows, targets, strict=True)) for i in range(n)]
    x = [0.0] * n
    for _ in range(sweeps):
        for j in range(n):
            if gram[j][j] > 0:
                grad = sum(gram[j][k] * x[k] for k in range(n)) - rhs[j]
                x[j] = max(0.0, x[j] - grad / gram[j][j])
    return x


def fit(samples: list[tuple[tuple[int, ...], int]]) -> list[float]:
    rows, targets = [], []
    for feats, tokens in samples:
        w = 1 / math.sqrt(max(tokens, 1))
        rows.append([f * w for f in feats])
        targets.append(tokens * w)
    return nnls(rows, targets)


def estimate(coefficients: list[float], feats: tuple[int, ...]) -> int:
    return max(1, round(sum(c * f for c, f in zip(coefficients, feats, strict=True))))


def read_corpus_args(specs: list[str]) -> list[tuple[str, str]]:
    extra = []
    for spec in specs:
        label, _, path = spec.partition("=")
        for para in Path(path).read_text(encoding="utf-8").split("\n\n"):
            if para.strip():
                extra.append((label, para.strip()))
    return extra


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--file", action="append", default=[], help="NAME=PATH of a .tiktoken(.gz) file"
    )
    parser.add_argument("--corpus", action="append", default=[], help="LABEL=PATH of extra text")
    parser.add_argument("--encodings", default="o200k_base,cl100k_base")
    args = parser.parse_args()
    files = dict(spec.split("=", 1) for spec in args.file)
    corpus = CORPUS + read_corpus_args(args.corpus)

    if importlib.util.find_spec("tiktoken") is None:
        sys.exit("needs tiktoken (and its encoding files): see this script's docstring")
    tokens = load_planning_module("tokens")
    heuristic = load_planning_module("heuristic")
    feats = [heuristic.features(text) for _, text in corpus]
    fitted: dict[str, list[float]] = {}
    for name in args.encodings.split(","):
        encoding, source = load_encoding(tokens, name, files)
        exact = [len(encoding.encode_ordinary(text)) for _, text in corpus]
        coefficients = fit(list(zip(feats, exact, strict=True)))
        fitted[name] = coefficients
        # 2-fold cross-validation: each half is estimated with coefficients fitted on the other.
        halves = [list(range(0, len(corpus), 2)), list(range(1, len(corpus), 2))]
        held_out = [0] * len(corpus)
        for train, test in (halves, halves[::-1]):
            c = fit([(feats[i], exact[i]) for i in train])
            for i in test:
                held_out[i] = estimate(c, feats[i])
        in_sample = [estimate(coefficients, f) for f in feats]

        print(f"\n## {name}  (exact counts from {source}; {len(corpus)} samples)\n")
        print(
            "| class | chars | tokens | chars/token | estimate | error | held-out error | worst sample (held out) |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        by_class: dict[str, list[int]] = defaultdict(list)
        for i, (label, _) in enumerate(corpus):
            by_class[label].append(i)
        for label, idx in by_class.items():
            chars = sum(len(corpus[i][1]) for i in idx)
            tok = sum(exact[i] for i in idx)
            est = sum(in_sample[i] for i in idx)
            held = sum(held_out[i] for i in idx)
            worst = max((held_out[i] / exact[i] - 1 for i in idx), key=abs)
            print(
                f"| {label} | {chars} | {tok} | {chars / tok:.2f} | {est} | {est / tok - 1:+.1%} "
                f"| {held / tok - 1:+.1%} | {worst:+.0%} |"
            )
        print("\n| feature | tokens each |\n|---|---:|")
        for feature, value in zip(heuristic.FEATURES, coefficients, strict=True):
            print(f"| {feature} | {value:.3f} |")
        f = dict(zip(heuristic.FEATURES, coefficients, strict=True))
        if f["accented_word"] + f["accented_letter"] < f["ascii_word"]:
            print("\nwarning: an accented letter can lower the count (not monotonic)")

    print("\nCOEFFICIENTS: dict[str, tuple[float, ...]] = {")
    for name, coefficients in fitted.items():
        print(f'    "{name}": ({", ".join(f"{c:.3f}" for c in coefficients)}),')
    print("}")


if __name__ == "__main__":
    main()
