"""Run one judging batch in its own process (the test kills it mid-run)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from evals.judge import JudgeClient, JudgeRequest  # noqa: E402

if __name__ == "__main__":
    base_url, cache_path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    client = JudgeClient(model="judge", base_url=base_url, api_key_env="FAKE_JUDGE_KEY", max_concurrency=3, timeout=30)
    requests = [JudgeRequest.chat("sys", f"question {i}", max_tokens=16) for i in range(n)]
    responses, stats = client.judge(requests, cache_path)
    print("done", stats)
