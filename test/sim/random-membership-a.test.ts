import { randomRuns } from './random-membership.ts'

randomRuns('test/sim/random-membership-a.test.ts', 1000, 100)
