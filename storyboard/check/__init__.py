"""The check stage: is each character on-model in every panel it appears in?

It reads only rendered panel images (never the diffusion model): detect people, assign detections to
the characters the story says are present, embed the crops with an identity model (CCIP or CLIP),
score them against references or the character's prototype, and write a report to look at.
"""
