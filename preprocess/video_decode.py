"""Decode many videos with one ffmpeg process and JPEG-encode their frames in-process.

Design (measured by benchmarks/bench_preprocess.py; figures and reasons in docs/data.md):

- ffmpeg start-up is paid once per batch: one ffmpeg process opens every video of a batch as its own input and
  writes each one to its own output pipe (``pipe:FD``) as PPM frames. Each frame is self-describing (width,
  height), so videos of different sizes share a process and frames never cross from one video to the next.
- Inputs are opened with ``-nofind_stream_info``: WebM headers carry the codec parameters, and skipping the
  probe decode saves time per video and gives identical frames.
- Resizing happens in YUV (bicubic, like TSM's ``scale=-1:256``); a second, unscaled ``scale`` converts to RGB
  through swscale's fast path (cheaper than converting while resizing).
- JPEG encoding is done here with Pillow (libjpeg-turbo, SIMD) at the standard IJG quality scale (quality 90 =
  libjpeg's ``-quality 90`` tables, 4:2:0 chroma): an exact meaning of "quality 90", and at the same PSNR it
  is faster than ffmpeg's MJPEG encoder and writes fewer bytes.
- A batch in which anything goes wrong (non-zero exit, any error-level ffmpeg message) is redone one video per
  process, so one corrupt file never costs its neighbours and every failure is attributed to its video.
- ffmpeg logs at verbose level with each line tagged by its level: error-level lines decide failures as above,
  the input dump tells each input's container, its first video stream's codec and an alpha channel, and each
  output's named resize (``scale@square<N>``) logs the size and sample aspect ratio of the frames it got, all for
  free (no probe process).
- Pixels are made square: a non-square sample aspect ratio (SAR) is resized to the display aspect inside the same
  bicubic resize (``sar`` in the scale expressions); the SAR that resize applied (the container's, else the
  bitstream's, which the input dump does not show under ``-nofind_stream_info``) goes into the sample's metadata.
  A square or unknown SAR keeps the plain size expressions, so such videos are resampled once, as without the rule.
- A still image in any file name is not a video: skipped. An image demuxer (``jpeg_pipe``, ``png_pipe``,
  ``image2``, ``ico``, ...) always means one; an animation demuxer (``gif``, ``apng``, ``webp_anim``,
  ``jpegxl_anim``) means one when it decodes to a single frame, while an animation of several frames is a video.
- VP8/VP9 alpha (WebM ``alpha_mode``): ffmpeg's native decoders drop the alpha plane and keep whatever colour the
  encoder stored under it, so such a video is decoded again alone with libvpx, which decodes the alpha plane,
  and composited on black (colour premultiplied by alpha, RGB = colour x alpha).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import io
import math
import os
import re
import selectors
import subprocess
from collections.abc import Sequence
from pathlib import Path

JPEG_SUBSAMPLING_420 = 2
READ_CHUNK_BYTES = 1 << 20
PIPE_BYTES = 1 << 20
PPM_HEADER = re.compile(rb"P6\s+(\d+)\s+(\d+)\s+(\d+)\s")
PPM_HEADER_MAX_BYTES = 64
POINTER_ADDRESS = re.compile(r" @ 0x[0-9a-fA-F]+")
ERROR_LINE_MAX_CHARS = 200
STDERR_LOG_LEVEL = "level+verbose"  # verbose: the resize's configuration line carries the applied SAR
ERROR_LEVEL_TAGS = ("[error] ", "[fatal] ", "[panic] ")
INPUT_LINE = re.compile(r"\] Input #(\d+), (.+?), from '")
VIDEO_STREAM_LINE = re.compile(r"Stream #(\d+):\d+\S*: Video: (\w+)")
SAR_FIELD = re.compile(r"\bSAR (\d+):(\d+)")
ALPHA_MODE_LINE = re.compile(r"^\S*\s+alpha_mode\s*:\s*1\s*$")
INPUT_DUMP_END = re.compile(r"Stream mapping:|\] Output #")
SQUARE_SCALE_NAME = "square"  # instance name of each output's first scale filter: scale@square<output index>
# The first scale filter's configuration line (libavfilter vf_scale, stable since FFmpeg 2):
# "[scale@square3 @ 0x...] [verbose] w:48 h:32 fmt:yuv420p ... sar:4/3 -> w:64 h:32 ... sar:1/1 flags:0x..."
APPLIED_SAR_LINE = re.compile(
    rf"^\[scale@{SQUARE_SCALE_NAME}(\d+) @ [^\]]*\] \[verbose\] w:\d+ h:\d+ .*?\bsar:(\d+)/(\d+) -> w:"
)
IMAGE_DEMUXER = re.compile(r"(_pipe|_pix|^image2|^image2pipe|^ico)$")
ANIMATION_DEMUXERS = frozenset({"gif", "apng", "webp_anim", "jpegxl_anim"})  # one frame: a still image
ALPHA_DECODERS = {"vp8": "libvpx", "vp9": "libvpx-vp9"}
COMPOSITE_ON_BLACK = "format=rgba,premultiply=inplace=1"
NO_VIDEO_STREAM_MESSAGE = "matches no streams"
REASON_CORRUPT = "corrupt or truncated video"
REASON_NO_FRAME = "no decodable frame"
REASON_MISSING = "missing video file"
REASON_EMPTY = "zero-byte video file"
REASON_IMAGE = "not a video (image container)"
REASON_NO_ALPHA_DECODER = "alpha channel but no libvpx decoder in this ffmpeg"


@dataclasses.dataclass
class InputInfo:
    """What ffmpeg's input dump says about one input: container (demuxer), first video stream, SAR, alpha."""

    container: str = ""
    codec: str = ""
    sar: tuple[int, int] | None = None
    alpha: bool = False

    @property
    def non_square_sar(self) -> str | None:
        """The SAR as "num:den" when it is known and not 1:1, else None (square pixels)."""
        if self.sar is None or self.sar[0] == 0 or self.sar[0] == self.sar[1]:
            return None
        return f"{self.sar[0]}:{self.sar[1]}"


@dataclasses.dataclass
class DecodedVideo:
    """The JPEG frames of one video, or the reason it could not be decoded.

    `source_sar` is the source's sample aspect ratio ("num:den") when it is not square (the frames are stored
    with square pixels at the display aspect), None for square or unknown; `composited_alpha` tells that the
    source had an alpha channel, composited on black.
    """

    path: Path
    frames: list[bytes] = dataclasses.field(default_factory=list)
    width: int = 0
    height: int = 0
    error: str | None = None
    source_sar: str | None = None
    composited_alpha: bool = False


def scale_filter(short_side: int, composite_alpha: bool = False, output_index: int | None = None) -> str:
    """Return the ffmpeg filter chain: resize to square pixels and the short side `short_side` (0 = native), to RGB.

    Sizes are those of the display aspect (coded width x SAR): landscape videos get height `short_side` and the
    width that keeps the display aspect ratio (TSM's ``scale=-1:256`` for square pixels); portrait videos get
    width `short_side`. At native size, a non-square SAR widens (or narrows) the frame to its display width.
    With a square (or unknown) SAR the expressions reduce to the plain ones (``-1``: ffmpeg keeps the aspect).
    `composite_alpha` premultiplies the colour by the alpha plane before dropping it (composite on black).
    `output_index` names the resize ``scale@square<index>`` so its log lines tell which output they are about
    (a name changes no pixel).
    """
    to_rgb = f"scale,{COMPOSITE_ON_BLACK},format=rgb24" if composite_alpha else "scale,format=rgb24"
    resize = "scale" if output_index is None else f"scale@{SQUARE_SCALE_NAME}{int(output_index)}"
    if short_side <= 0:
        return f"{resize}=w='if(eq(sar,1),iw,trunc(iw*sar+0.5))':h=ih,{to_rgb}"
    side = int(short_side)
    portrait = "lte(iw*sar,ih)"
    width = f"if({portrait},{side},if(eq(sar,1),-1,trunc({side}*iw*sar/ih+0.5)))"
    height = f"if({portrait},if(eq(sar,1),-1,trunc({side}*ih/(iw*sar)+0.5)),{side})"
    return f"{resize}=w='{width}':h='{height}',{to_rgb}"


def ffmpeg_command(
    ffmpeg: str, paths: Sequence[Path], output_fds: Sequence[int], short_side: int, alpha_decoder: str | None = None,
    fps: float | None = None,
) -> list[str]:
    """Build one ffmpeg command that decodes every path to its own PPM pipe.

    `alpha_decoder` (one path only) forces that decoder (libvpx) and composites the alpha plane on black. `fps`
    resamples each video to that frame rate first (ffmpeg's fps filter: frames dropped or repeated by their
    timestamps); None keeps every decoded frame.
    """
    command = [ffmpeg, "-hide_banner", "-nostdin", "-nostats", "-v", STDERR_LOG_LEVEL]
    for path in paths:
        decoder = ["-c:v", alpha_decoder] if alpha_decoder else []
        command += ["-threads", "1", *decoder, "-nofind_stream_info", "-i", str(path)]
    for index, descriptor in enumerate(output_fds):
        chain = scale_filter(short_side, composite_alpha=alpha_decoder is not None, output_index=index)
        if fps is not None:
            chain = f"fps=fps={fps:g},{chain}"
        command += [
            "-map", f"{index}:v:0", "-threads", "1", "-filter_threads", "1", "-vf", chain,
            "-fps_mode", "passthrough", "-an", "-sn", "-dn",
            "-c:v", "ppm", "-f", "image2pipe", f"pipe:{descriptor}",
        ]  # fmt: skip
    return command


class _PpmReader:
    """Read one output pipe's PPM frames straight into a reused frame buffer and JPEG-encode each one.

    Reading into a preallocated buffer (``os.readv``) avoids copying every 350 kB frame three times.
    """

    def __init__(self, video: DecodedVideo, quality: int) -> None:
        self.video = video
        self.quality = quality
        self.header = bytearray()
        self.frame = bytearray()
        self.frame_size = 0
        self.filled = 0
        self.width = self.height = 0

    def read_from(self, descriptor: int) -> bool:
        """Read what the pipe holds now; return False at end of stream."""
        if self.frame_size == 0:
            chunk = os.read(descriptor, PPM_HEADER_MAX_BYTES)
            if not chunk:
                return False
            self._take_header_bytes(chunk)
            return True
        count = os.readv(descriptor, [memoryview(self.frame)[self.filled : self.frame_size]])
        if count == 0:
            return False
        self.filled += count
        self._finish_frame_if_full()
        return True

    def _take_header_bytes(self, chunk: bytes) -> None:
        """Accumulate header bytes; once a whole header is there, start filling the frame buffer."""
        self.header += chunk
        match = PPM_HEADER.match(self.header)
        if match is None:
            if len(self.header) > PPM_HEADER_MAX_BYTES:
                raise ValueError(f"{self.video.path}: ffmpeg wrote no PPM header")
            return
        self.width, self.height = int(match.group(1)), int(match.group(2))
        self.frame_size = self.width * self.height * 3
        if len(self.frame) != self.frame_size:
            self.frame = bytearray(self.frame_size)
        rest = bytes(self.header[match.end() :])
        self.header.clear()
        taken = min(len(rest), self.frame_size)
        self.frame[:taken] = rest[:taken]
        self.filled = taken
        self._finish_frame_if_full()
        if len(rest) > taken:
            self._take_header_bytes(rest[taken:])

    def _finish_frame_if_full(self) -> None:
        """Encode the frame once the buffer is full and get ready for the next header."""
        if self.filled < self.frame_size:
            return
        from PIL import Image

        image = Image.frombuffer("RGB", (self.width, self.height), self.frame, "raw", "RGB", 0, 1)
        encoded = io.BytesIO()
        image.save(encoded, "JPEG", quality=self.quality, subsampling=JPEG_SUBSAMPLING_420)
        self.video.frames.append(encoded.getvalue())
        self.video.width, self.video.height = self.width, self.height
        self.frame_size = self.filled = 0

    def leftover(self) -> int:
        """Bytes of an unfinished header or frame (non-zero means a cut stream)."""
        return len(self.header) + self.filled


def _first_error_line(stderr: bytes) -> str:
    """Return the first error-level stderr line, untagged, shortened and without pointer addresses (reproducible)."""
    for line in stderr.decode("utf-8", "replace").splitlines():
        tag = next((tag for tag in ERROR_LEVEL_TAGS if tag in line), None)
        if tag is not None and line.replace(tag, "", 1).strip():
            return POINTER_ADDRESS.sub("", line.replace(tag, "", 1).strip())[:ERROR_LINE_MAX_CHARS]
    return ""


def parse_input_dump(stderr: bytes, count: int) -> list[InputInfo]:
    """Read each input's container, first video stream codec, SAR and alpha flag from ffmpeg's log.

    The SAR is the one each output's resize applied (``scale@square<N>``'s configuration line: the container's
    SAR, else the decoded frames' one from the bitstream); where that line is missing, the input dump's (the
    container's only, as inputs are opened with ``-nofind_stream_info``).
    """
    lines = stderr.decode("utf-8", "replace").splitlines()
    infos = _parse_dump_lines(lines, count)
    for index, sar in parse_applied_sars(lines).items():
        if index < count:
            infos[index].sar = sar
    return infos


def parse_applied_sars(lines: Sequence[str]) -> dict[int, tuple[int, int]]:
    """Return, per output index, the reduced SAR of the first frames its named resize was configured for."""
    applied: dict[int, tuple[int, int]] = {}
    for line in lines:
        if (match := APPLIED_SAR_LINE.match(line)) and int(match.group(1)) not in applied:
            numerator, denominator = int(match.group(2)), int(match.group(3))
            divisor = math.gcd(numerator, denominator) or 1
            applied[int(match.group(1))] = (numerator // divisor, denominator // divisor)
    return applied


def _parse_dump_lines(lines: Sequence[str], count: int) -> list[InputInfo]:
    """Read the input dump: each input's container, first video stream codec, container SAR and alpha flag."""
    infos = [InputInfo() for _ in range(count)]
    current: InputInfo | None = None
    in_video_stream = False
    for line in lines:
        if INPUT_DUMP_END.search(line):
            break
        if match := INPUT_LINE.search(line):
            index = int(match.group(1))
            current = infos[index] if index < count else None
            if current is not None:
                current.container = match.group(2)
            in_video_stream = False
        elif match := VIDEO_STREAM_LINE.search(line):
            in_video_stream = current is not None and not current.codec
            if in_video_stream:
                current.codec = match.group(2)
                sar = SAR_FIELD.search(line)
                current.sar = (int(sar.group(1)), int(sar.group(2))) if sar else None
        elif "Stream #" in line:
            in_video_stream = False
        elif in_video_stream and ALPHA_MODE_LINE.match(line):
            current.alpha = True
    return infos


def _make_pipe() -> tuple[int, int]:
    """Return a pipe (read, write), enlarged where the OS allows so a whole frame fits (fewer context switches)."""
    read_fd, write_fd = os.pipe()
    if hasattr(fcntl, "F_SETPIPE_SZ"):
        with contextlib.suppress(OSError):
            fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    return read_fd, write_fd


def _run_batch(
    ffmpeg: str, paths: Sequence[Path], short_side: int, quality: int, alpha_decoder: str | None = None,
    fps: float | None = None,
) -> tuple[list[DecodedVideo], list[InputInfo], str]:
    """Decode `paths` with one ffmpeg process; return the videos, their input dumps and the first error line."""
    videos = [DecodedVideo(path=Path(path)) for path in paths]
    pipes = [_make_pipe() for _ in paths]
    write_fds = [write_fd for _, write_fd in pipes]
    command = ffmpeg_command(ffmpeg, paths, write_fds, short_side, alpha_decoder, fps)
    try:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, pass_fds=write_fds
        )
    finally:
        for write_fd in write_fds:
            os.close(write_fd)
    stderr = _pump(process, [read_fd for read_fd, _ in pipes], videos, quality)
    error = _first_error_line(stderr)
    if process.returncode != 0 and not error:
        error = f"ffmpeg exited with status {process.returncode}"
    return videos, parse_input_dump(stderr, len(videos)), error


def _pump(process: subprocess.Popen, read_fds: list[int], videos: list[DecodedVideo], quality: int) -> bytes:
    """Read every output pipe and stderr until all close; encode frames as they arrive; return stderr."""
    readers = {fd: _PpmReader(video, quality) for fd, video in zip(read_fds, videos)}
    selector = selectors.DefaultSelector()
    stderr_fd = process.stderr.fileno()
    for descriptor in [*read_fds, stderr_fd]:
        selector.register(descriptor, selectors.EVENT_READ)
    stderr_chunks: list[bytes] = []
    open_count = len(read_fds) + 1
    try:
        while open_count:
            for key, _ in selector.select():
                if key.fd == stderr_fd:
                    chunk = os.read(stderr_fd, READ_CHUNK_BYTES)
                    stderr_chunks.append(chunk)
                    still_open = bool(chunk)
                else:
                    still_open = readers[key.fd].read_from(key.fd)
                if not still_open:
                    selector.unregister(key.fd)
                    open_count -= 1
    except BaseException:
        process.kill()
        raise
    finally:
        selector.close()
        for descriptor in read_fds:
            os.close(descriptor)
        process.stderr.close()
        process.wait()
    for reader in readers.values():
        if reader.leftover() and reader.video.error is None:
            reader.video.error = f"cut PPM stream ({reader.leftover()} bytes left over)"
    return b"".join(stderr_chunks)


def _decode_one(
    ffmpeg: str, path: Path, short_side: int, quality: int, alpha_decoder: str | None = None,
    fps: float | None = None,
) -> tuple[DecodedVideo, InputInfo]:
    """Decode one video alone; any ffmpeg error marks it bad with that error as the reason."""
    (video,), (info,), error = _run_batch(ffmpeg, [path], short_side, quality, alpha_decoder, fps)
    video.composited_alpha = alpha_decoder is not None
    if error and NO_VIDEO_STREAM_MESSAGE in error:
        video.frames, video.error = [], f"{REASON_NO_FRAME}: no video stream"
    elif error:
        video.frames, video.error = [], f"{REASON_CORRUPT}: {error}"
    elif video.error is not None:
        video.frames = []
    elif not video.frames:
        video.error = REASON_NO_FRAME
    return video, info


def _finish(
    ffmpeg: str, video: DecodedVideo, info: InputInfo, short_side: int, quality: int, fps: float | None = None
) -> DecodedVideo:
    """Apply what the input dump says: skip a single image, redo an alpha video with libvpx, record the SAR."""
    if video.error is not None:
        return video
    if is_still_image(info.container, len(video.frames)):
        return DecodedVideo(path=video.path, error=f"{REASON_IMAGE}: {info.container}")
    if info.alpha and not video.composited_alpha:
        decoder = ALPHA_DECODERS.get(info.codec)
        if decoder is None:
            return video  # alpha_mode on another codec: no alpha decoder known, the colour planes are kept
        if decoder not in available_decoders(ffmpeg):
            return DecodedVideo(path=video.path, error=f"{REASON_NO_ALPHA_DECODER} ({decoder})")
        video, info = _decode_one(ffmpeg, video.path, short_side, quality, decoder, fps)
        if video.error is not None:
            return video
    video.source_sar = info.non_square_sar
    return video


def is_still_image(container: str, frame_count: int) -> bool:
    """Tell whether an input is a still image: an image demuxer, or an animation demuxer with a single frame.

    Parameters
    ----------
    container : str
        The demuxer name(s) of ffmpeg's input dump ("gif", "png_pipe", "matroska,webm", ...).
    frame_count : int
        Frames the input decoded to.
    """
    demuxer = container.split(",")[0]
    return bool(IMAGE_DEMUXER.search(demuxer)) or (demuxer in ANIMATION_DEMUXERS and frame_count <= 1)


@functools.lru_cache(maxsize=None)
def available_decoders(ffmpeg: str) -> frozenset[str]:
    """Return the decoder names of an ffmpeg binary (``ffmpeg -decoders``)."""
    listing = subprocess.run(
        [ffmpeg, "-hide_banner", "-decoders"], capture_output=True, text=True, check=False
    ).stdout
    return frozenset(line.split()[1] for line in listing.splitlines() if len(line.split()) > 1 and line[:1] == " ")


def precheck(path: Path) -> str | None:
    """Return a skip reason for a missing or empty file, else None (cheap checks before any ffmpeg)."""
    try:
        size = Path(path).stat().st_size
    except FileNotFoundError:
        return REASON_MISSING
    except OSError as error:
        return f"unreadable video file: {error.strerror}"
    return REASON_EMPTY if size == 0 else None


def decode_videos(
    ffmpeg: str,
    paths: Sequence[Path],
    short_side: int,
    quality: int,
    batch_size: int,
    fps: float | None = None,
) -> list[DecodedVideo]:
    """Decode `paths` in batches of `batch_size` videos per ffmpeg process.

    Parameters
    ----------
    ffmpeg : str
        The ffmpeg binary (see preprocess.ffmpeg_tools.resolve_ffmpeg).
    paths : sequence of Path
        Videos, in the order the results are returned.
    short_side : int
        Output short side in pixels; 0 keeps the native size.
    quality : int
        JPEG quality on the IJG scale (1-95).
    batch_size : int
        Videos per ffmpeg process.
    fps : float, optional
        Resample every video to this frame rate (ffmpeg's fps filter); None keeps every frame.

    Returns
    -------
    list of DecodedVideo
        One per path; `error` is set (and `frames` empty) for a video that cannot be used.
    """
    results: list[DecodedVideo] = []
    for start in range(0, len(paths), max(1, batch_size)):
        batch = [Path(path) for path in paths[start : start + max(1, batch_size)]]
        results += _decode_batch(ffmpeg, batch, short_side, quality, fps)
    return results


def _decode_batch(
    ffmpeg: str, paths: list[Path], short_side: int, quality: int, fps: float | None = None
) -> list[DecodedVideo]:
    """Decode one batch; pre-checked bad files are excluded, a failed batch is redone video by video."""
    reasons = {path: precheck(path) for path in paths}
    good = [path for path in paths if reasons[path] is None]
    decoded: dict[Path, DecodedVideo] = {}
    if good:
        videos, infos, error = _run_batch(ffmpeg, good, short_side, quality, fps=fps)
        if error or any(video.error or not video.frames for video in videos):
            redone = (_decode_one(ffmpeg, path, short_side, quality, fps=fps) for path in good)
            videos, infos = map(list, zip(*redone))
        videos = [_finish(ffmpeg, video, info, short_side, quality, fps) for video, info in zip(videos, infos)]
        decoded = {video.path: video for video in videos}
    return [decoded.get(path) or DecodedVideo(path=path, error=reasons[path]) for path in paths]
