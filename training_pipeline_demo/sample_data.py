# Over 300 lines: two thirds are word lists (singers, songs, topics) the generator draws from.
"""Deterministic sample rows for the two upstream tables the pipeline reads.

Why this module exists:

* ``make demo`` and the test suite need source data without access to the production
  PostgreSQL database, so this module fabricates rows shaped exactly like
  ``bilibili_metadata`` and ``internal.video_type_label`` (same columns, same Python types
  a database driver would return, tz-aware UTC timestamps).
* The rows mimic the real archive closely enough to exercise every code path: sparse aids in
  several clusters, mostly Chinese text about Chinese virtual-singer (VOCALOID / SynthV) songs
  versus other videos, NULL / empty / whitespace-only fields, very long descriptions,
  re-uploads with identical text, and labels from several annotators who sometimes disagree or
  relabel a video later.
* Everything is derived from ``random.Random(seed)`` and a fixed base datetime (never the
  current time), so the demo, its dataset checksums and the tests are reproducible bit for bit.

The module is pure: no I/O, no database, no global state.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

METADATA_COLUMNS: tuple[str, ...] = (
    "aid",
    "bvid",
    "description",
    "uid",
    "tags",
    "title",
    "published_at",
    "duration",
    "created_at",
    "status",
    "cover_url",
)
"""Column order of ``bilibili_metadata`` rows (the order used by ``SampleData.videos``)."""

LABEL_COLUMNS: tuple[str, ...] = ("aid", "label", "user", "created_at")
"""Column order of ``internal.video_type_label`` rows; ``id`` is serial and assigned by the DB."""

ANNOTATORS: tuple[str, ...] = ("alice", "bob", "carol", "dave")
"""Annotator names; four so that some videos can be labelled by everyone."""

MAX_TITLE_CHARS = 80
MAX_DESCRIPTION_CHARS = 2000
MAX_TAGS = 10

# --- Fixed time anchors: every timestamp is an offset from _BASE_TIME, never from now(). ---
_BASE_TIME = datetime(2025, 1, 1, tzinfo=UTC)  # snapshot time of the sample archive
_CRAWL_START = _BASE_TIME - timedelta(days=214)  # crawler started backfilling (2024-06-01)
_LABEL_START = _BASE_TIME + timedelta(days=3)  # labelling campaign starts after the snapshot
_LABEL_SPAN = timedelta(days=45)

# --- aid clusters: (low inclusive, high exclusive, share, first publish time, last publish) ---
_SMALL_AIDS = (1, 100_000)
_OLD_AIDS = (10**7, 10**9)
_RECENT_AIDS = (113_000_000_000_000, 114_000_000_000_000)
_SMALL_SHARE = 0.15
_OLD_SHARE = 0.35

# --- edge-case and label tuning (shares of n_videos unless stated otherwise) ---
_NULL_TITLE_SHARE = 0.02
_NULL_DESCRIPTION_SHARE = 0.04
_NULL_TAGS_SHARE = 0.05
_BLANK_TITLE_SHARE = 0.01
_BLANK_DESCRIPTION_SHARE = 0.03
_BLANK_TAGS_SHARE = 0.02
_DASH_DESCRIPTION_SHARE = 0.02  # Bilibili's default description is a single "-"
_ALL_EMPTY_SHARE = 0.003
_LONG_DESCRIPTION_SHARE = 0.002
_REUPLOAD_GROUP_SHARE = 1 / 150
_HARD_MIN_N = 1000  # hard minimums below only apply from this many videos on
_MIN_ALL_EMPTY = 5
_MIN_LONG_DESCRIPTION = 3
_MIN_REUPLOAD_GROUPS = 20

_LABELLED_SHARE = 0.28
_USER_COUNT_WEIGHTS = {1: 0.42, 2: 0.33, 3: 0.15, 4: 0.10}
_DISAGREE_CLEAR = 0.055  # multi-annotator videos with a clear answer that still get disagreement
_DISAGREE_AMBIGUOUS = 0.32
_RELABEL_SHARE = 0.055  # (aid, user) pairs that get an extra, later label row
_RELABEL_FLIP_SHARE = 0.6
_EMOJI_SHARE = 0.04
_FOREIGN_SHARE = 0.04

_BASE58 = "FcwAPNKTMug3GV5Lj7EJnHpWsx4tb8haYeviqBz6rkCy12mUSDQX9RdoZf"
_BV_XOR = 23442827791579
_BV_MAX_AID = 1 << 51


@dataclass(frozen=True)
class SampleData:
    """Rows for both upstream tables.

    Tuples (not dicts) mirror what a DB-API cursor returns, so loaders can use them unchanged.
    """

    videos: list[tuple]  # each tuple in METADATA_COLUMNS order, sorted by aid
    labels: list[tuple]  # each tuple in LABEL_COLUMNS order, sorted by created_at


@dataclass(frozen=True)
class _Category:
    """A kind of video: its ground truth and how hard it is for annotators to agree on."""

    name: str
    is_song: bool
    weight: float  # share of all videos
    p_true: float  # probability the annotators' consensus label is True
    ambiguous: bool
    duration: tuple[int, int]  # seconds


_CATEGORIES: tuple[_Category, ...] = (
    # Songs sung by (Chinese) virtual singers: 40 % in total.
    _Category("original", True, 0.17, 0.98, False, (150, 330)),
    _Category("vocal_cover", True, 0.10, 0.97, False, (150, 300)),
    _Category("concert", True, 0.04, 0.85, True, (180, 5400)),
    _Category("medley", True, 0.04, 0.92, False, (300, 1500)),
    _Category("miku_chinese", True, 0.05, 0.80, True, (150, 300)),
    # Everything else: 60 %, including hard negatives that mention the singers.
    _Category("game", False, 0.14, 0.02, False, (600, 3600)),
    _Category("vlog", False, 0.08, 0.02, False, (180, 1200)),
    _Category("tutorial", False, 0.07, 0.10, True, (300, 1800)),
    _Category("mmd", False, 0.06, 0.30, True, (120, 300)),
    _Category("human_cover", False, 0.08, 0.15, True, (150, 330)),
    _Category("live_clip", False, 0.05, 0.05, False, (60, 1800)),
    _Category("knowledge", False, 0.05, 0.02, False, (240, 1500)),
    _Category("food", False, 0.04, 0.02, False, (180, 900)),
    _Category("drawing", False, 0.03, 0.05, False, (60, 900)),
)

# ------------------------------------------------------------------------------------------
# Word pools
# ------------------------------------------------------------------------------------------
_SINGERS = (
    "洛天依",
    "乐正绫",
    "言和",
    "乐正龙牙",
    "徵羽摩柯",
    "墨清弦",
    "星尘",
    "心华",
    "海伊",
    "苍穹",
    "赤羽",
    "诗岸",
    "牧心",
)
_ENGINES = ("VOCALOID", "VOCALOID5", "VOCALOID6", "Synthesizer V", "SynthV", "ACE Studio")
_SONG_A = (
    "星",
    "月",
    "春",
    "夏",
    "秋",
    "冬",
    "风",
    "雨",
    "雪",
    "花",
    "海",
    "梦",
    "光",
    "夜",
    "云",
    "灯",
    "城",
    "河",
    "山",
    "鲸",
    "蝶",
    "歌",
    "茶",
    "酒",
    "剑",
    "琴",
    "火",
    "潮",
)
_SONG_B = (
    "落",
    "语",
    "行",
    "归",
    "辞",
    "谣",
    "引",
    "曲",
    "赋",
    "念",
    "烬",
    "眠",
    "愿",
    "signal",
    "之诗",
    "与你",
    "尽头",
    "旅人",
    "来信",
    "不眠",
)
_SONG_PATTERNS = (
    "{a}{b}",
    "{a}{c}{b}",
    "致{a}{c}",
    "{a}的{c}{b}",
    "{a}与{c}",
    "{a}{c}谣",
    "第{n}个{a}天",
    "{a}下{c}中",
    "{a}{b}（{c}{b}）",
)
_FAMOUS_SONGS = (
    "普通DISCO",
    "权御天下",
    "达拉崩吧",
    "千年食谱颂",
    "万古生香",
    "九九八十一",
    "勾指起誓",
    "霜雪千年",
    "东京不太热",
    "一半一半",
    "世末歌者",
    "夏虫",
)
_NAME_A = (
    "月见",
    "鱼丸",
    "柚子茶",
    "纸飞机",
    "夜航船",
    "橘子",
    "清风",
    "星河",
    "白桃",
    "青柠",
    "竹林",
    "北极熊",
    "雾岛",
    "南瓜",
    "晴空",
    "咸鱼",
    "小熊",
    "猫饼",
    "糯米",
    "山茶",
)
_NAME_B = ("P", "酱", "君", "工作室", "制作组", "喵", "_official", "同学", "不吃香菜", "233")
_GAMES = (
    "原神",
    "明日方舟",
    "我的世界",
    "艾尔登法环",
    "塞尔达传说：王国之泪",
    "王者荣耀",
    "英雄联盟",
    "星露谷物语",
    "空洞骑士",
    "黑神话：悟空",
    "崩坏：星穹铁道",
    "杀戮尖塔",
    "泰拉瑞亚",
    "只狼",
)
_CITIES = (
    "上海",
    "成都",
    "重庆",
    "杭州",
    "西安",
    "长沙",
    "厦门",
    "大理",
    "青岛",
    "哈尔滨",
    "东京",
    "大阪",
    "苏州",
    "南京",
)
_FOODS = (
    "红烧肉",
    "麻婆豆腐",
    "番茄炒蛋",
    "小龙虾",
    "酸菜鱼",
    "蛋挞",
    "提拉米苏",
    "螺蛳粉",
    "煎饺",
)
_TOPICS = (
    "黑洞",
    "量子计算",
    "光刻机",
    "古代丝绸之路",
    "深海鱼",
    "大模型",
    "机械键盘",
    "显卡",
    "恐龙灭绝",
    "相对论",
)
_DANCES = ("极乐净土", "恋爱循环", "桃源恋歌", "千本樱", "Lamb.", "好想爱这个世界啊")
_EMOJI = ("🎵", "✨", "🎶", "💙", "🌟", "🎤", "😂", "🥺", "🔥", "🌸")
_FOREIGN = (
    "初音ミク",
    "よろしくお願いします",
    "歌ってみた",
    "ボカロ",
    "ありがとう",
    "新曲です",
    "Original Song",
    "Thanks for watching",
    "Lyrics",
    "Official MV",
)

# ------------------------------------------------------------------------------------------
# Templates per category: titles, description sentences, tags
# ------------------------------------------------------------------------------------------
_TITLES: dict[str, tuple[str, ...]] = {
    "original": (
        "【{singer}原创】{song}",
        "【{singer}·{singer2}原创曲】{song}【{engine}】",
        "{song} / {singer} feat. {producer}【原创PV付】",
        "【{engine}原创】{song}——{year}年的第一首歌",
        "【{singer}】{song}【原创曲】",
        "【原创】{song}【{singer}{engine}】",
        "【{singer}生日会{year}】{song}",
    ),
    "vocal_cover": (
        "【{singer}】{famous}（翻调）",
        "【{singer}{engine}翻调】{famous}",
        "【{singer}×{singer2}】{famous}【调教练习】",
        "{famous} - {singer} cover",
        "【{engine}】用{singer}翻调了{famous}",
    ),
    "concert": (
        "【{singer}{year}演唱会】{famous}现场",
        "【虚拟歌手演唱会】{singer}&{singer2}《{song}》Live",
        "【4K】{singer}{year}生日会全程",
        "【BML{year}】{singer}《{famous}》",
    ),
    "medley": (
        "【{singer}】{n}首中文VOCALOID串烧",
        "【{year}年度】中文虚拟歌手殿堂曲合集 第{ep}弹",
        "一口气听完{singer}的{n}首神曲",
        "【周刊VOCALOID中文排行榜#{ep}】",
    ),
    "miku_chinese": (
        "【初音未来】{song}【中文原创】",
        "【初音未来中文声库】{famous}",
        "【Miku】{song}（中文曲）feat. 初音未来",
        "【初音未来×{singer}】{song}",
    ),
    "game": (
        "【{game}】第{ep}期 {game_phrase}",
        "{game}：{game_phrase}",
        "【实况】{game} 全流程解说 P{ep}",
        "萌新第一次玩{game}，结果……",
        "【{game}】{n}小时速通挑战",
    ),
    "vlog": (
        "{city}vlog | {vlog_phrase}",
        "【vlog】在{city}的{n}天",
        "一个人去{city}，{vlog_phrase}",
        "{city}{n}日游攻略 | 人均{money}元",
    ),
    "tutorial": (
        "【{engine}调教教程】第{ep}课：如何让{singer}唱得更自然",
        "零基础学{engine}｜{n}分钟入门",
        "【教程】{engine}参数详解：{param}",
        "新手向：用{engine}给{singer}调教的{n}个技巧",
    ),
    "mmd": (
        "【MMD】{singer}的{dance}",
        "【{singer}MMD】{dance}【{n}K】",
        "【MMD】{singer}和{singer2}跳{dance}",
    ),
    "human_cover": (
        "【翻唱】{famous}（原唱：{singer}）",
        "【{uploader}】{famous} 翻唱",
        "试着翻唱了{singer}的{famous}",
        "【男声翻唱】{famous}【{uploader}】",
    ),
    "live_clip": (
        "【直播切片】{uploader}：{clip_phrase}",
        "【{uploader}】直播时{clip_phrase}",
        "【切片】{date}直播 {clip_phrase}",
    ),
    "knowledge": (
        "【科普】{topic}到底是什么？",
        "{n}分钟看懂{topic}",
        "为什么{topic}这么重要？",
        "【硬核】深入浅出讲{topic}",
    ),
    "food": (
        "在家做{food}，{n}分钟搞定",
        "【{uploader}的厨房】{food}",
        "挑战{money}元做一桌{food}",
    ),
    "drawing": (
        "【手书】{singer}×{singer2}",
        "【板绘过程】画了{singer}",
        "【原创手书】{song}",
        "{n}小时画{singer}｜绘画过程",
    ),
}

_SONG_STAFF = (
    "作词：{lyricist}",
    "作曲：{producer}",
    "编曲：{arranger}",
    "调教：{tuner}",
    "混音：{mixer}",
    "曲绘：{artist}",
    "PV：{pv}",
    "演唱：{singer}",
)

_SENTENCES: dict[str, tuple[str, ...]] = {
    "song": (
        "这是我用{engine}做的第{n}首歌，献给一直支持{singer}的大家。",
        "灵感来自{year}年冬天的一场雪，写完这首歌花了整整{few}个月。",
        "歌词讲的是一个关于{a}和{c}的故事，希望你也能在里面找到自己。",
        "{singer}的声音真的太适合这种曲风了，调教的时候反复听了{n2}遍。",
        "伴奏和人声分轨已放在网盘，欢迎翻唱和二创，记得标注出处哦。",
        "PV制作拖了很久，感谢{pv}老师熬夜赶工！",
        "副歌部分的和声是{singer2}，两个人的声线叠在一起特别好听。",
        "曲子是{bpm}BPM，调号{key}，有兴趣的可以扒谱试试。",
        "本曲已上线网易云音乐和QQ音乐，搜索“{song}”即可收听。",
        "第一次尝试{genre}风格，编曲有很多不成熟的地方，请多指教。",
        "祝{singer}{year}年生日快乐！又陪你走过了一年。",
        "如果喜欢这首歌，请给{singer}投个币吧，你的支持是我们最大的动力。",
        "歌词有一些是方言，字幕里做了注释。",
        "翻调自{famous}，原曲作者已授权，音源为{singer}{engine}。",
        "用的是{engine}的新声库，和以前的{singer}比起来气息感更强了。",
    ),
    "concert": (
        "{year}年{singer}演唱会现场录制，音质一般请见谅。",
        "现场的灯光和全息投影效果太震撼了，来了{n}万人。",
        "本视频仅供个人收藏，侵删。",
        "安可曲是{famous}，全场一起合唱的时候真的哭了。",
    ),
    "medley": (
        "收录了{n}首中文VOCALOID经典曲目，时间轴在评论区。",
        "排名依据播放量和收藏数，统计截止到{date}。",
        "每首歌的原作者已在简介标注，如有遗漏请私信。",
    ),
    "game": (
        "本期我们继续推进主线，顺便把支线任务也清掉了。",
        "这个Boss我打了{n2}次才过，最后靠的是运气。",
        "{game}版本更新后平衡性变了不少，大家觉得怎么样？",
        "录制设备：{device}，画质设置全部拉满。",
        "上期视频的评论我都看了，下期会试试大家推荐的玩法。",
        "第{ep}期存档已经上传，需要的自取。",
        "今天抽卡又歪了，{n2}抽才出金……",
    ),
    "vlog": (
        "这次在{city}待了{n}天，吃了很多好吃的。",
        "拍摄设备：{device}，剪辑用的是剪映。",
        "住的民宿在老城区，推开窗就能看到{city}的街景。",
        "人均花费大概{money}元，攻略放在评论区置顶了。",
        "天气一直下雨，但是心情很好。",
        "BGM是{singer}的{famous}，很适合旅行的时候听。",
    ),
    "tutorial": (
        "本期讲解{param}的用法，适合刚入门的新手。",
        "工程文件放在评论区，可以对照着视频一起练习。",
        "{engine}的音高线一定不要画得太平，否则会很像机器。",
        "示范用的声库是{singer}，其他声库同理。",
        "下一课我们讲颤音和呼吸音的处理。",
        "有问题欢迎在评论区提问，我会尽量回复。",
    ),
    "mmd": (
        "模型：{singer}（by {artist}），动作：{dance}（by {producer}）。",
        "镜头和特效是自己做的，渲染了{n}个小时。",
        "配布物已获得使用许可，请勿二次配布。",
        "第一次做MMD，K帧K到头秃。",
    ),
    "human_cover": (
        "原唱是{singer}，很喜欢这首歌所以试着翻唱了一下。",
        "混音：{mixer}，录音设备是{device}。",
        "高音部分有点破音，请大家轻喷。",
        "伴奏来自原作者公开的分轨，感谢{producer}！",
    ),
    "live_clip": (
        "原直播间：{uploader}，录播组整理。",
        "直播日期：{date}，完整录播见合集。",
        "这段真的笑死我了，弹幕全是哈哈哈。",
        "切片仅供娱乐，请勿上升主播本人。",
    ),
    "knowledge": (
        "本期视频聊聊{topic}，资料来源见评论区。",
        "内容如有错误欢迎指正，我们会在下期更正。",
        "为了做这期视频查了{n}篇论文，真的很不容易。",
        "动画制作：{artist}，文案：{uploader}。",
    ),
    "food": (
        "今天做的是{food}，做法非常简单。",
        "食材清单：五花肉{n}克、生抽两勺、冰糖少许。",
        "火候一定要控制好，小火慢炖{n2}分钟。",
        "失败了{few}次才成功，大家可以少走弯路。",
    ),
    "drawing": (
        "使用软件：Procreate，耗时约{n}小时。",
        "画的是{singer}，参考了官方设定图。",
        "手书音源是{famous}，原曲作者{producer}。",
        "线稿和上色过程都在视频里了，欢迎交流。",
    ),
    "general": (
        "喜欢的话请点个赞吧～",
        "一键三连支持一下！",
        "有任何问题欢迎在评论区留言。",
        "感谢观看，我们下期再见！",
        "本视频首发于B站，未经授权禁止转载。",
        "欢迎关注{uploader}，每周{weekday}更新。",
        "封面来自{artist}，已获授权。",
        "本期视频剪了{n}天，求求大家多多支持。",
        "粉丝群：{qq}，进群请备注B站ID。",
        "{date}更新：修正了字幕里的错别字。",
        "合作请私信，商务邮箱见个人主页。",
        "以上内容仅代表个人观点。",
    ),
}

_TAGS: dict[str, tuple[str, ...]] = {
    "song": (
        "VOCALOID",
        "中文VOCALOID",
        "原创曲",
        "VOCALOID中文曲",
        "虚拟歌手",
        "V家",
        "术力口",
        "SynthV",
        "Synthesizer V",
        "原创",
        "音乐",
        "PV",
        "调教",
        "翻调",
        "歌姬",
        "VOCALOID CHINA",
        "中文虚拟歌手",
    ),
    "concert": ("演唱会", "虚拟演唱会", "全息投影", "LIVE", "现场"),
    "game": ("游戏", "实况", "单机游戏", "手机游戏", "攻略", "娱乐", "解说"),
    "vlog": ("vlog", "旅行", "日常", "生活记录", "旅游攻略", "美食探店"),
    "tutorial": ("教程", "调教教程", "知识", "学习", "音乐制作", "新手向"),
    "mmd": ("MMD", "MikuMikuDance", "3D", "舞蹈", "MMD.3D"),
    "human_cover": ("翻唱", "音乐", "男声", "女声", "cover", "歌ってみた"),
    "live_clip": ("直播切片", "虚拟主播", "VUP", "搞笑", "录播"),
    "knowledge": ("科普", "知识", "科学", "涨知识", "硬核"),
    "food": ("美食", "家常菜", "美食制作", "厨艺", "吃货"),
    "drawing": ("手书", "绘画", "板绘", "同人", "画画"),
}

_GAME_PHRASES = (
    "全成就攻略",
    "这操作我服了",
    "终于通关了！",
    "隐藏结局",
    "零氪玩家的逆袭",
    "新版本评测",
)
_VLOG_PHRASES = ("吃到了超好吃的小吃", "慢节奏的一天", "和朋友的周末", "第一次看海", "毕业旅行")
_CLIP_PHRASES = ("唱歌跑调全场笑喷", "被弹幕教做人", "深夜杂谈", "突然破防", "抽卡全程")
_PARAMS = ("音高线", "颤音", "呼吸音", "力度参数", "气声", "张力", "发音时长")
_GENRES = ("古风", "电子", "摇滚", "民谣", "City Pop", "国风电子", "抒情")
_DEVICES = ("索尼A7M4", "iPhone 15", "大疆Pocket 3", "罗德NT1", "Switch采集卡", "OBS")
_WEEKDAYS = ("一", "二", "三", "四", "五", "六", "日")
_KEYS = ("C大调", "A小调", "降E大调", "F#小调", "G大调")


@dataclass
class _Video:
    """Mutable working state of one video while the plan is being built."""

    aid: int
    category: _Category
    uid: int
    title: str | None = None
    description: str | None = None
    tags: str | None = None
    ctx: dict[str, str] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------
# Small helpers
# ------------------------------------------------------------------------------------------
def _scaled(n_videos: int, share: float, hard_min: int = 0) -> int:
    """Return how many videos get a feature; hard minimums only apply for large samples."""
    count = round(n_videos * share)
    if n_videos >= _HARD_MIN_N:
        count = max(count, hard_min)
    return min(count, n_videos)


def aid_to_bvid(aid: int) -> str:
    """Encode an aid as a BV id using Bilibili's public av->BV scheme (e.g. 170001 -> BV17x411w7KC).

    Deriving the bvid from the aid (instead of drawing it at random) keeps it unique and
    consistent, exactly like the real table.
    """
    chars = list("BV1000000000")
    index = len(chars) - 1
    value = (_BV_MAX_AID | aid) ^ _BV_XOR
    while value > 0:
        chars[index] = _BASE58[value % 58]
        value //= 58
        index -= 1
    chars[3], chars[9] = chars[9], chars[3]
    chars[4], chars[7] = chars[7], chars[4]
    return "".join(chars)


def _name(rng: random.Random) -> str:
    """Return a random creator / uploader nickname."""
    return rng.choice(_NAME_A) + rng.choice(_NAME_B)


def _song_name(rng: random.Random) -> str:
    """Return a random, plausible Chinese song title."""
    pattern = rng.choice(_SONG_PATTERNS)
    return pattern.format(
        a=rng.choice(_SONG_A), b=rng.choice(_SONG_B), c=rng.choice(_SONG_A), n=rng.randint(2, 99)
    )


def _context(rng: random.Random, base_year: int) -> dict[str, str]:
    """Draw every placeholder value one video's texts may use (names stay consistent per video)."""
    singer, singer2 = rng.sample(_SINGERS, 2)
    return {
        "singer": singer,
        "singer2": singer2,
        "engine": rng.choice(_ENGINES),
        "song": _song_name(rng),
        "famous": rng.choice(_FAMOUS_SONGS),
        "producer": _name(rng),
        "lyricist": _name(rng),
        "arranger": _name(rng),
        "tuner": _name(rng),
        "mixer": _name(rng),
        "artist": _name(rng),
        "pv": _name(rng),
        "uploader": _name(rng),
        "game": rng.choice(_GAMES),
        "game_phrase": rng.choice(_GAME_PHRASES),
        "city": rng.choice(_CITIES),
        "vlog_phrase": rng.choice(_VLOG_PHRASES),
        "clip_phrase": rng.choice(_CLIP_PHRASES),
        "param": rng.choice(_PARAMS),
        "dance": rng.choice(_DANCES),
        "topic": rng.choice(_TOPICS),
        "food": rng.choice(_FOODS),
        "genre": rng.choice(_GENRES),
        "device": rng.choice(_DEVICES),
        "weekday": rng.choice(_WEEKDAYS),
        "key": rng.choice(_KEYS),
        "a": rng.choice(_SONG_A),
        "c": rng.choice(_SONG_A),
        "year": str(base_year),
        "n": str(rng.randint(2, 30)),
        "few": str(rng.randint(2, 9)),
        "n2": str(rng.randint(10, 500)),
        "ep": str(rng.randint(1, 120)),
        "bpm": str(rng.randint(70, 190)),
        "money": str(rng.randint(3, 80) * 50),
        "qq": str(rng.randint(100_000_000, 999_999_999)),
        "date": f"{base_year}年{rng.randint(1, 12)}月{rng.randint(1, 28)}日",
    }


def _sentence_pool(category: _Category) -> tuple[str, ...]:
    """Return the description sentences that fit a category (songs share one pool)."""
    if category.name in ("original", "vocal_cover", "miku_chinese"):
        return _SENTENCES["song"]
    if category.name in ("concert", "medley"):
        return _SENTENCES["song"] + _SENTENCES[category.name]
    return _SENTENCES[category.name]


def _tag_pool(category: _Category) -> tuple[str, ...]:
    """Return the tag names that fit a category."""
    if category.is_song:
        extra = _TAGS["concert"] if category.name == "concert" else ()
        return _TAGS["song"] + extra
    return _TAGS[category.name]


# ------------------------------------------------------------------------------------------
# Aids, times and per-row fields
# ------------------------------------------------------------------------------------------
def _generate_aids(rng: random.Random, n_videos: int) -> list[int]:
    """Return sorted, unique, sparse aids in three clusters (tiny, old, recent ~1.13e14)."""
    n_small = round(n_videos * _SMALL_SHARE)
    n_old = round(n_videos * _OLD_SHARE)
    n_recent = n_videos - n_small - n_old
    aids = rng.sample(range(*_SMALL_AIDS), n_small)
    aids += rng.sample(range(*_OLD_AIDS), n_old)
    aids += rng.sample(range(*_RECENT_AIDS), n_recent)
    return sorted(aids)


def _published_at(rng: random.Random, aid: int) -> datetime:
    """Map an aid to a publish time; aids grow with time, as on the real site."""
    if aid < _SMALL_AIDS[1]:
        start, end, pos = datetime(2009, 7, 1, tzinfo=UTC), 300, aid / _SMALL_AIDS[1]
    elif aid < _OLD_AIDS[1]:
        start, end = datetime(2017, 4, 1, tzinfo=UTC), 6 * 365
        pos = (aid - _OLD_AIDS[0]) / (_OLD_AIDS[1] - _OLD_AIDS[0])
    else:
        start, end = datetime(2024, 7, 1, tzinfo=UTC), 160
        pos = (aid - _RECENT_AIDS[0]) / (_RECENT_AIDS[1] - _RECENT_AIDS[0])
    seconds = int(pos * end * 86_400) + rng.randint(0, 3_600)
    return start + timedelta(seconds=seconds)


def _created_at(rng: random.Random, published_at: datetime) -> datetime:
    """Crawl time: shortly after publication, but never before the crawler existed."""
    return max(published_at, _CRAWL_START) + timedelta(seconds=rng.randint(60, 3 * 86_400))


def _cover_url(rng: random.Random) -> str:
    """Return a cover URL shaped like Bilibili's image CDN links."""
    return f"http://i{rng.randint(0, 2)}.hdslb.com/bfs/archive/{rng.getrandbits(160):040x}.jpg"


def _assign_categories(rng: random.Random, n_videos: int) -> list[_Category]:
    """Give each video a category with exact quotas, so the song share is stable across seeds."""
    counts = [int(n_videos * c.weight) for c in _CATEGORIES]
    for i in range(n_videos - sum(counts)):  # hand the remainder out round-robin
        counts[i % len(counts)] += 1
    categories = [c for c, k in zip(_CATEGORIES, counts, strict=True) for _ in range(k)]
    rng.shuffle(categories)
    return categories


def _uploader_pools(rng: random.Random, n_videos: int) -> dict[str, list[int]]:
    """Uid pools per category: a few prolific uploaders and a long tail, like the real site."""
    size = max(2, n_videos // (5 * len(_CATEGORIES)))
    return {c.name: [rng.randint(10_000, 3_500_000_000) for _ in range(size)] for c in _CATEGORIES}


def _pick_uid(rng: random.Random, pool: Sequence[int]) -> int:
    """Pick an uploader, skewed towards the first (most prolific) ones."""
    return pool[int(len(pool) * rng.random() ** 2)]


# ------------------------------------------------------------------------------------------
# Text generation
# ------------------------------------------------------------------------------------------
def _decorate(rng: random.Random, text: str) -> str:
    """Sprinkle emoji or a Japanese / English phrase into a small share of texts."""
    if rng.random() < _EMOJI_SHARE:
        text = f"{text}{rng.choice(_EMOJI)}"
    if rng.random() < _FOREIGN_SHARE:
        text = f"{text} {rng.choice(_FOREIGN)}"
    return text


def _make_title(rng: random.Random, video: _Video) -> str:
    """Return a title of at most MAX_TITLE_CHARS characters."""
    title = rng.choice(_TITLES[video.category.name]).format(**video.ctx)
    return _decorate(rng, title)[:MAX_TITLE_CHARS]


def _sentence_count(rng: random.Random) -> int:
    """Heavy-tailed number of description sentences (many short, a few long descriptions)."""
    roll = rng.random()
    if roll < 0.06:
        return 1
    if roll < 0.20:
        return rng.randint(2, 3)
    if roll < 0.78:
        return rng.randint(4, 8)
    if roll < 0.97:
        return rng.randint(9, 14)
    return rng.randint(15, 40)


def _make_description(rng: random.Random, video: _Video, n_sentences: int) -> str:
    """Build a description from category sentences, general sentences and a song staff list."""
    n_general = sum(rng.random() < 0.3 for _ in range(n_sentences))
    templates = _distinct(rng, _sentence_pool(video.category), n_sentences - n_general)
    templates += _distinct(rng, _SENTENCES["general"], n_general)
    rng.shuffle(templates)
    body = rng.choice(("\n", "", " ", "\n\n")).join(t.format(**video.ctx) for t in templates)
    if video.category.is_song and rng.random() < 0.6:
        staff = rng.sample(_SONG_STAFF, rng.randint(3, len(_SONG_STAFF)))
        body = "\n".join(line.format(**video.ctx) for line in staff) + "\n\n" + body
    return _decorate(rng, body)[:MAX_DESCRIPTION_CHARS]


def _distinct(rng: random.Random, pool: Sequence[str], count: int) -> list[str]:
    """Draw ``count`` templates, repeating only once the pool is exhausted (as people do)."""
    drawn: list[str] = []
    while count > 0:
        take = min(count, len(pool))
        drawn += rng.sample(pool, take)
        count -= take
    return drawn


def _make_long_description(rng: random.Random, video: _Video) -> str:
    """Return a description of roughly MAX_DESCRIPTION_CHARS characters (lyrics dumps etc.)."""
    parts: list[str] = []
    length = 0
    target = rng.randint(MAX_DESCRIPTION_CHARS - 100, MAX_DESCRIPTION_CHARS + 200)
    pool = _sentence_pool(video.category) + _SENTENCES["general"]
    while length < target:
        sentence = rng.choice(pool).format(**video.ctx)
        parts.append(sentence)
        length += len(sentence) + 1
    return "\n".join(parts)[:MAX_DESCRIPTION_CHARS]


def _make_tags(rng: random.Random, video: _Video) -> str:
    """Return 1..MAX_TAGS comma-joined tag names (singer names for songs and hard negatives)."""
    pool = list(_tag_pool(video.category))
    if video.category.is_song or video.category.name in ("mmd", "human_cover", "tutorial"):
        pool += [video.ctx["singer"], video.ctx["singer2"]]
    if video.category.name == "game":
        pool.append(video.ctx["game"])
    k = rng.randint(1, min(MAX_TAGS, len(pool)))
    return ",".join(rng.sample(pool, k))


def _fill_text(rng: random.Random, video: _Video) -> None:
    """Generate the normal (non-edge-case) title, description and tags of one video."""
    video.title = _make_title(rng, video)
    video.description = _make_description(rng, video, _sentence_count(rng))
    video.tags = _make_tags(rng, video)


# ------------------------------------------------------------------------------------------
# Edge cases
# ------------------------------------------------------------------------------------------
def _blank(rng: random.Random) -> str:
    """Return an empty (half the time) or whitespace-only string, as found in scraped data."""
    if rng.random() < 0.5:
        return ""
    return rng.choice((" ", "  ", "\n", "\u3000", " \n\t"))


def _take(indices: list[int], count: int) -> list[int]:
    """Pop ``count`` indices off a shuffled list, so edge cases never overlap."""
    taken = indices[:count]
    del indices[:count]
    return taken


def _apply_field_edge_cases(rng: random.Random, videos: list[_Video], free: list[int]) -> None:
    """NULL, blank and placeholder values in single fields, each on a few percent of videos."""
    n = len(videos)
    setters: tuple[tuple[float, Callable[[_Video], None]], ...] = (
        (_NULL_TITLE_SHARE, lambda v: setattr(v, "title", None)),
        (_NULL_DESCRIPTION_SHARE, lambda v: setattr(v, "description", None)),
        (_NULL_TAGS_SHARE, lambda v: setattr(v, "tags", None)),
        (_BLANK_TITLE_SHARE, lambda v: setattr(v, "title", _blank(rng))),
        (_BLANK_DESCRIPTION_SHARE, lambda v: setattr(v, "description", _blank(rng))),
        (_BLANK_TAGS_SHARE, lambda v: setattr(v, "tags", _blank(rng))),
        (_DASH_DESCRIPTION_SHARE, lambda v: setattr(v, "description", "-")),
    )
    for share, setter in setters:
        for index in _take(free, _scaled(n, share)):
            setter(videos[index])


def _apply_all_empty(rng: random.Random, videos: list[_Video], free: list[int]) -> None:
    """Videos without any usable text: each field NULL, empty or whitespace-only."""
    for index in _take(free, _scaled(len(videos), _ALL_EMPTY_SHARE, _MIN_ALL_EMPTY)):
        video = videos[index]
        video.title, video.description, video.tags = (
            rng.choice((None, _blank(rng))) for _ in range(3)
        )


def _apply_long_descriptions(rng: random.Random, videos: list[_Video], free: list[int]) -> None:
    """A few descriptions at the 2000-character limit (full lyrics, long announcements)."""
    count = _scaled(len(videos), _LONG_DESCRIPTION_SHARE, _MIN_LONG_DESCRIPTION)
    for index in _take(free, count):
        videos[index].description = _make_long_description(rng, videos[index])


def _apply_reuploads(
    rng: random.Random, videos: list[_Video], free: list[int], pools: dict[str, list[int]]
) -> None:
    """Groups of 2-4 videos with identical text (re-uploads) by different uploaders.

    Copies come from the same category, so re-uploads do not change the song share, and the
    earliest aid of a group is the original.
    """
    n_groups = _scaled(len(videos), _REUPLOAD_GROUP_SHARE, _MIN_REUPLOAD_GROUPS)
    by_category: dict[str, list[int]] = {}
    for index in free:
        by_category.setdefault(videos[index].category.name, []).append(index)
    used: set[int] = set()
    for _ in range(n_groups):
        eligible = [c.name for c in _CATEGORIES if len(by_category.get(c.name, [])) >= 2]
        if not eligible:  # only possible for tiny samples
            break
        name = rng.choice(eligible)
        candidates = by_category[name]
        size = min(len(candidates), rng.choice((2, 2, 2, 3, 4)))
        group = sorted(candidates[-size:])
        del candidates[-size:]
        used.update(group)
        original = videos[group[0]]
        for index in group[1:]:
            copy = videos[index]
            copy.title, copy.description, copy.tags = (
                original.title,
                original.description,
                original.tags,
            )
            copy.uid = rng.choice([uid for uid in pools[name] if uid != original.uid] or [1])
    free[:] = [index for index in free if index not in used]


# ------------------------------------------------------------------------------------------
# Labels
# ------------------------------------------------------------------------------------------
def _weighted_user_count(rng: random.Random) -> int:
    """How many annotators labelled one video (mostly 1-3, sometimes all four)."""
    counts = list(_USER_COUNT_WEIGHTS)
    return rng.choices(counts, weights=list(_USER_COUNT_WEIGHTS.values()))[0]


def _final_labels(rng: random.Random, category: _Category, users: list[str]) -> dict[str, bool]:
    """Each user's latest label: a consensus value, sometimes contradicted by a minority or tie."""
    consensus = rng.random() < category.p_true
    labels = dict.fromkeys(users, consensus)
    disagree_p = _DISAGREE_AMBIGUOUS if category.ambiguous else _DISAGREE_CLEAR
    if len(users) >= 2 and rng.random() < disagree_p:
        for user in rng.sample(users, rng.randint(1, len(users) // 2)):
            labels[user] = not consensus  # at most half flip: a minority or an exact tie
    return labels


def _label_rows(
    rng: random.Random, aid: int, crawled: datetime, labels: dict[str, bool]
) -> list[tuple]:
    """Rows for one video: one per user, plus an earlier row for users who relabelled later."""
    start = max(crawled, _LABEL_START) + timedelta(
        seconds=rng.randint(0, int(_LABEL_SPAN.total_seconds()))
    )
    rows: list[tuple] = []
    for user, value in labels.items():
        at = start + timedelta(seconds=rng.randint(0, 14 * 86_400))
        if rng.random() < _RELABEL_SHARE:
            first = (not value) if rng.random() < _RELABEL_FLIP_SHARE else value
            rows.append((aid, first, user, at))
            at += timedelta(seconds=rng.randint(3_600, 20 * 86_400))
        rows.append((aid, value, user, at))
    return rows


def _generate_labels(
    rng: random.Random, videos: list[_Video], created: list[datetime]
) -> list[tuple]:
    """Label rows for about 28 % of the videos, sorted by created_at like a serial id."""
    n_labelled = max(1, round(len(videos) * _LABELLED_SHARE))
    rows: list[tuple] = []
    for index in sorted(rng.sample(range(len(videos)), n_labelled)):
        video = videos[index]
        users = sorted(rng.sample(ANNOTATORS, _weighted_user_count(rng)))
        labels = _final_labels(rng, video.category, users)
        rows += _label_rows(rng, video.aid, created[index], labels)
    rows.sort(key=lambda row: (row[3], row[0], row[2]))
    return rows


# ------------------------------------------------------------------------------------------
# Public entry point
# ------------------------------------------------------------------------------------------
def generate_sample_data(n_videos: int = 3600, seed: int = 20240601) -> SampleData:
    """Generate ``n_videos`` metadata rows and their label rows, deterministically from ``seed``.

    Percentages scale with ``n_videos``; the hard minimums (5 text-less videos, 3 descriptions of
    ~2000 characters, 20 re-upload groups) apply from 1000 videos on.
    """
    if n_videos < 1:
        raise ValueError(f"n_videos must be >= 1, got {n_videos}")
    rng = random.Random(seed)
    aids = _generate_aids(rng, n_videos)
    categories = _assign_categories(rng, n_videos)
    pools = _uploader_pools(rng, n_videos)
    published = [_published_at(rng, aid) for aid in aids]
    created = [_created_at(rng, at) for at in published]
    videos = [
        _Video(aid=aid, category=cat, uid=_pick_uid(rng, pools[cat.name]))
        for aid, cat in zip(aids, categories, strict=True)
    ]
    for video, at in zip(videos, published, strict=True):
        video.ctx = _context(rng, at.year)
        _fill_text(rng, video)

    free = list(range(n_videos))
    rng.shuffle(free)
    _apply_all_empty(rng, videos, free)
    _apply_long_descriptions(rng, videos, free)
    _apply_reuploads(rng, videos, free, pools)
    _apply_field_edge_cases(rng, videos, free)

    rows = [
        (
            v.aid,
            aid_to_bvid(v.aid),
            v.description,
            v.uid,
            v.tags,
            v.title,
            published[i],
            rng.randint(*v.category.duration),
            created[i],
            0,
            _cover_url(rng),
        )
        for i, v in enumerate(videos)
    ]
    return SampleData(videos=rows, labels=_generate_labels(rng, videos, created))
